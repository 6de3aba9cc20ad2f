"""What the device's modules share: the log line, dropping a module used once, the heap in use."""

import sys


def log(text):
    print("fp: " + text)


def unload(name):
    """Drop fp.<name> once used: code loaded from .mpy lives in the heap (fp.settings: ~11 KB).

    The modules loaded for one job (the boot check, a command, a verify, a release's confirmation)
    go through here, so the next job loads them afresh and nothing keeps them in between.
    """
    sys.modules.pop("fp." + name, None)
    package = sys.modules.get("fp")
    if package is not None and hasattr(package, name):
        delattr(package, name)


def heap_in_use():
    """Bytes of heap in use after a collection (MicroPython), or None on CPython."""
    try:
        import gc

        gc.collect()
        return gc.mem_alloc()
    except AttributeError:
        return None
