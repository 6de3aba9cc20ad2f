"""Board entry point: choose the release to boot (fp.boot), then run the Firstparty device application."""

import gc
import sys

# A collection after every 1/16 of the heap allocated (at least 4 KB), not only when the heap is
# full: garbage left to pile up spreads what lives long (the code loaded from .mpy, the device's
# objects) across the whole heap, and the free space ends up in holes too small for a signature's
# buffers. With it the first boot needs 80 KB of heap where it needed 88-92 KB (i386,
# docs/benchmarks.md, "Heap cuts, ninth pass"); on a board with PSRAM the step grows with the heap.
gc.threshold(max(4096, (gc.mem_free() + gc.mem_alloc()) // 16))

try:  # code in flash: MicroPython >= 1.25 mounts a board's ROMFS partition at /rom
    import os

    os.stat("/rom/fp")
    sys.path.insert(0, "/rom")  # run in place from there, not loaded into the heap from .mpy files
except OSError:
    pass

# The release's choice and its rollback (fp.boot.start) are compiled code, not here: a board
# compiles main.py from source at every boot, and the code of this module stays in the heap for as
# long as the device runs (730 bytes more at rest on i386 when it held them).
from fp import boot  # noqa: E402

app = boot.start()
del boot  # forgotten by start(): only main() is left running
app.main()
