# Boots the firmware as fp.app.main does, up to the event loop, and prints the heap it holds
# (gc.mem_alloc after a collection, less the interpreter's own): the boot-import heap. Runs under
# firmware/tools/wasm_run.mjs (its `# --- step` lines), with board.json and provision.json in the
# working directory. The modules run() imports are imported here too: the sensor loop when the
# board has sensors, the HTTP API when provision.json turns it on.
import gc

gc.collect()
base = gc.mem_alloc()
from fp import ed25519  # noqa: E402

ed25519.load_table()
# --- step
from fp import app  # noqa: E402

checked = app.load_settings()
board, provision = checked.board, checked.provision
hal = app.load_hal(board, provision)
history = app.safemode.BootHistory(provision["safe_mode_boots"], provision["safe_mode_window_s"])
history.start(hal.time_s(), hal.is_power_on_boot())
device = app.build_device(hal, checked, history)
if board["sensors"]:
    from fp.sampling import sample_forever  # noqa: E402, F401
if provision.get("http_port"):
    from fp.http_api import HttpApi  # noqa: E402, F401
# --- step
gc.collect()
print(gc.mem_alloc() - base)
