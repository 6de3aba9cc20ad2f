"""The owner's commands that change config.json: set-destinations and set-interval.

fp.command loads this for one of them and drops it after, with fp.settings, whose checks (the very
ones config.json gets at boot) it runs, and fp.checked, which fp.settings loads: each name a module
makes stays in a board's name pool (fp.inbound's docstring), so get-info, reboot and hand-over,
the commands a board gets most, load none of these.
"""

import asyncio

from fp import settings
from fp.errors import ProtocolError
from fp.runtime import unload


def _save_config(device):
    from fp import checked  # config.json and the boot's checked copy with it

    checked.save_config(device.config)
    unload("checked")


def restart_sampling(device, name):
    """A new interval applies at once: the sensor's loop starts again, a reading now, then the
    new interval. The loop is cancelled in its sleep, its only wait: a command runs in another
    task, so the loop cannot be anywhere else."""
    task = device.sensor_tasks.get(name)
    if task is None:  # safe mode: no sensor loops
        return
    task.cancel()
    for sensor in device.board["sensors"]:
        if sensor["name"] == name:
            device.start_sampling(sensor)


async def _apply_destinations_later(device):
    await asyncio.sleep(0.3)  # let the ack leave through the old destinations first
    device.apply_destinations()


def set_destinations(device, args):
    specs = args.get("destinations")
    if not isinstance(specs, list) or not specs or len(specs) > settings.MAX_DESTINATIONS:
        raise ProtocolError(
            "bad-command", "destinations must be a list of 1..%d brokers" % settings.MAX_DESTINATIONS
        )
    names = []
    for spec in specs:
        found = settings.destination_problem(spec, names)
        if found is not None:
            raise ProtocolError("bad-command", "destination %s: expected %s, found %r" % found)
        names.append(spec["name"])
    device.config["destinations"] = specs
    _save_config(device)
    asyncio.create_task(_apply_destinations_later(device))
    return {"destinations": names}


def set_interval(device, args):
    sensor, interval = args.get("sensor"), args.get("interval_s")
    highest = settings.MAX_INTERVAL_S
    if sensor not in [s["name"] for s in device.board["sensors"]] or not settings.is_int(
        interval, 1, highest
    ):
        raise ProtocolError("bad-command", "set-interval needs a fitted sensor and 1..%d s" % highest)
    device.config["intervals"][sensor] = interval
    _save_config(device)
    restart_sampling(device, sensor)
    return {"sensor": sensor, "interval_s": interval}
