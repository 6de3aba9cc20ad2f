# The host's type check (pyproject.toml [tool.pyright]) of the firmware's `from micropython import
# const` (fp/__init__.py): MicroPython's const, the value itself; firmware/ is checked against the
# ESP32 stubs instead.
from typing import TypeVar

_Value = TypeVar("_Value")

def const(value: _Value) -> _Value: ...
