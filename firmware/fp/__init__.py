"""The firmware, written once for MicroPython and CPython (the host imports it too).

`const` is MicroPython's: its compiler folds `NAME = const(value)` into the code, and a name with
a leading underscore then takes no room in its module's globals nor a name in the qstr pool.
CPython has none: there it is the value itself. A module's `TYPE_CHECKING = const(False)` lets the
compiler drop its typing block, and the names in it, from the .mpy (pyright takes it as true).

A record (a command, a receipt, a card, a release, a destination) is a plain class whose
`__init__` assigns each field in turn: MicroPython has no dataclasses, so that shape repeats from
module to module by design, not as copied logic.
"""

# the release this code is: the card, the status, get-info, fp.ota, and the digest of the checked
# settings (fp.checked), which the boot reads without loading fp.identity
FIRMWARE_VERSION = "0.1.0"

# No typing block here: its names (TypeVar and the like) would stay in a board's name pool.
try:
    from micropython import const  # pyright: ignore[reportAssignmentType] (its stub: position-only)
except ImportError:  # CPython

    def const(value):
        return value
