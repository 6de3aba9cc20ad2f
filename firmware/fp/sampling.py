"""The sensor loop: read one fitted sensor, sign the reading, queue it everywhere, wait, again."""

import asyncio

from fp.runtime import log


async def sample_forever(device, sensor):
    """Sample `sensor` at its interval (config.json's, else the board's) until cancelled.

    A failing sensor logs and tries again at its next interval: it never stops the others. A new
    interval from the owner applies at once (`device.interval_changed`).
    """
    name = sensor["name"]
    changed = device.interval_events[name] = asyncio.Event()
    while True:
        try:
            measurements = device.hal.read(sensor)
            reading = device.sign_reading(measurements)
            device.latest[name] = reading
            device.put("reading", reading)
        except Exception as error:  # one failing sensor never stops the others
            log("sensor %s: %s %s" % (name, type(error).__name__, error))
        interval = device.config["intervals"].get(name, sensor["interval_s"])
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), interval)
        except asyncio.TimeoutError:
            pass
