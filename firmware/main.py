"""Board entry point: run the Firstparty device application."""

import sys

try:  # code in flash: MicroPython >= 1.25 mounts a board's ROMFS partition at /rom
    import os

    os.stat("/rom/fp")
    sys.path.insert(0, "/rom")  # run in place from there, not loaded into the heap from .mpy files
except OSError:
    pass

# The Ed25519 table (and, with viper, the field registers beside it: one 13 KB buffer) needs one
# contiguous block: take it first, while the heap is still empty, before the other modules load.
from fp import ed25519  # noqa: E402

ed25519.load_table()

from fp import app  # noqa: E402

app.main()
