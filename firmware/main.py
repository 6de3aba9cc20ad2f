"""Board entry point: choose the release to boot (fp.slots), then run the Firstparty device application."""

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


def _forget_fp():
    for name in [name for name in sys.modules if name == "fp" or name.startswith("fp.")]:
        del sys.modules[name]


# A release installed by an update lives in a slot folder and boots on probation (fp.slots).
from fp import slots  # noqa: E402

_folder, _event = slots.boot_folder()
del slots
_forget_fp()  # whatever runs next is imported from the chosen release
if _folder:
    sys.path.insert(0, _folder)
    print("fp: boot release in %s (%s)" % (_folder, _event))
elif _event == "rolled-back":
    print("fp: the trial release never got stable: rolled back")

# The Ed25519 table is opened (and its size checked) before the application is imported: a trial
# release without a good one rolls back here. It takes no heap (fp.ed25519.load_table).
try:
    from fp import ed25519

    ed25519.load_table()
    from fp import app
except Exception as error:  # a trial release that cannot even start: back to the active one now
    if not _folder:
        raise
    print("fp: release in %s cannot start (%s): rolled back" % (_folder, error))
    sys.path.remove(_folder)
    _forget_fp()
    from fp import slots

    slots.abandon_trial()
    del slots
    _forget_fp()
    from fp import ed25519

    ed25519.load_table()
    from fp import app

app.main()
