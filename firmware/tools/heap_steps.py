# What the firmware's heap holds, step by step: boots the device as main.py and fp.app.main do,
# importing each module on its own first, and prints the heap each step adds (gc.mem_alloc after a
# collection) and the total, then runs the device for RUN_S seconds and prints what running adds,
# then one command (an owner's get-info from command.bin, if there is one) and the names (qstrs)
# the board holds (micropython.qstr_info's pool line).
# Run under the unix port with board.json and provision.json in the working directory and the
# firmware (a build, or a ROMFS image mounted at /rom) on the path: bench/bench_heap_breakdown.py.
# Each output line: `step <name> <added bytes> <total bytes>`.
import gc
import sys

RUN_S = 4
# main.py's boot first loads the module that chooses the release (fp.boot; fp.slots in older
# firmware), and forgets every fp module before the application is imported from the chosen
# release: their names stay in the pool, as on a board
try:
    from fp import boot as _boot
except ImportError:
    from fp import slots as _boot
del _boot
for _name in [_name for _name in sys.modules if _name == "fp" or _name.startswith("fp.")]:
    del sys.modules[_name]
gc.collect()
_base = gc.mem_alloc()
_last = [_base]


def step(name):
    gc.collect()
    now = gc.mem_alloc()
    print("step %s %d %d" % (name, now - _last[0], now - _base))
    _last[0] = now


step("interpreter")
from fp import ed25519  # noqa: E402

step("import fp.ed25519")
ed25519.load_table()
step("Ed25519 table and field registers (fp.fe25519, fp.sha512v)")
MODULES = (
    "runtime errors storage safemode app hal_sim sensor_types ids topics cbor cose_sign senml device_messages"
    " ringbuf mqtt destinations identity device sampling http_api"
)
for _name in MODULES.split():
    try:
        __import__("fp." + _name)
    except ImportError:  # not in the revision measured (bench --baseline runs this on older code)
        continue
    step("import fp." + _name)
from fp import app  # noqa: E402

checked = app.load_settings()
board, provision = checked.board, checked.provision
step("settings (the checked copy; fp.settings at a first boot)")
hal = app.load_hal(board, provision)
history = app.safemode.BootHistory(provision["safe_mode_boots"], provision["safe_mode_window_s"])
history.start(hal.time_s(), hal.is_power_on_boot())
step("hal and boot history")
device = app.build_device(hal, checked, history)
step("Device (identity, signing key)")
import asyncio  # noqa: E402


async def _measure():
    # device.run's set-up, one piece at a time (the HTTP API first: no other task runs while it
    # starts); then device.run itself, told to skip the pieces already done (is_safe while it
    # starts: no second sensor loop or HTTP API)
    hal.start()
    asyncio.open_connection  # noqa: B018 (asyncio imports its stream module on first use)
    step("asyncio's stream module (the MQTT connection and the HTTP API use it)")
    if provision.get("http_port"):
        from fp.http_api import HttpApi

        device.http = HttpApi(device, app.log)
        step("HttpApi object (no request buffer between requests)")
        await device.http.start(hal.lan_host, provision["http_port"])
        step("HTTP API listening (asyncio server, socket, task)")
    device.apply_destinations()
    step("destinations (Broker, MQTTClient, RingBuffer, will, 2 tasks each)")
    from fp.sampling import sample_forever

    start = getattr(device, "start_sampling", None)  # older firmware: the loops are started here
    for sensor in board["sensors"]:
        if start:
            start(sensor)
        else:
            asyncio.create_task(sample_forever(device, sensor))
    step("sensor loops (%d tasks)" % len(board["sensors"]))
    device.is_safe = True
    task = asyncio.create_task(device.run())
    await asyncio.sleep(0)
    device.is_safe = False
    step("device.run's main loop started")
    await asyncio.sleep(RUN_S)
    step("running %d s (connected, readings delivered)" % RUN_S)
    for name, destination in device.destinations.items():
        print("info destination %s sent=%d buffered=%d" % (name, destination.sent, destination.buffered))
    # One command: an owner's get-info signed for this board, from command.bin when the caller left
    # one (bench_heap_breakdown.py and tests/firmware/test_memory.py do): judged, verified (with
    # fp.ed25519_int) and applied, as a board's first owner command. Without it a refused one (this
    # script holds no owner key), then get-info's operation: the interpreter and the parsers without
    # the verify. Either way the modules are dropped after; the names they made stay in the qstr
    # pool, which never shrinks
    try:
        with open("command.bin", "rb") as f:
            data = f.read()
    except OSError:
        data = None
    if data:
        device.on_command(data)
        await asyncio.sleep(0.2)  # the ack delivered
        step("one command (an owner's get-info: judged, verified, applied; dropped after)")
        print("info refused %d" % device.refused)
    else:
        device.on_command(b"\xa0")
        from fp import command
        from fp.runtime import unload

        command.get_info(device, {})
        unload("command")
        await asyncio.sleep(0.2)  # the refusal's ack delivered
        step("one command (refused, then get-info's operation; fp.command dropped)")
    # The names the running board holds (micropython.qstr_info: n_qstr, the names made at run time
    # and by loading modules; the interpreter's own are in ROM): the pool grows in doubling chunks
    # (20, 40, ... entries), each paid in full once its first name comes
    import micropython

    micropython.qstr_info()
    # What one of each running object costs, measured by making one more (not connected)
    from fp.destinations import Destination, broker_for
    from fp.mqtt import MQTTClient
    from fp.ringbuf import RingBuffer

    spec = {"name": "probe", "host": "127.0.0.1", "port": 9}
    probe_broker = broker_for(spec, provision, device.identity.seed, device.device_id)
    step("probe: one Broker")
    client = MQTTClient(probe_broker, "probe", None, subscriptions=[("a/b", 1)], log=None)
    step("probe: one MQTTClient object (not connected)")
    ring = RingBuffer("q_probe.bin", 128)
    step("probe: one RingBuffer (128 slots)")
    probe = Destination("probe", probe_broker, client, ring, device.device_id)
    step("probe: one Destination object")
    probe.put("reading", device.sign_reading(hal.read(board["sensors"][0])))
    step("probe: one signed reading waiting in flash (ring)")
    reading = device.sign_reading(hal.read(board["sensors"][0]))
    step("probe: one signed reading (bytes)")
    del probe, ring, client, probe_broker, reading
    print("info modules %s" % " ".join(sorted(name for name in sys.modules if name.startswith("fp"))))
    task.cancel()


asyncio.run(_measure())
