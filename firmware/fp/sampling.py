"""The sensor loop: read one fitted sensor, sign the reading, queue it everywhere, wait, again."""

import asyncio

from fp.runtime import log


async def sample_forever(device, sensor):
    """Sample `sensor` at its interval (config.json's, else the board's) until cancelled.

    A failing sensor logs and tries again at its next interval: it never stops the others. A new
    interval from the owner cancels this loop and starts another
    (`fp.config_commands.restart_sampling`): a reading at once, then the new interval. The wait is
    a plain sleep, not a wait_for on an event: a wait_for holds two tasks more for as long as it
    waits (about 490 bytes on 32 bits, measured on the i386 build), and a sensor loop waits nearly
    all the time.
    """
    name = sensor["name"]
    while True:
        try:
            measurements = device.hal.read(sensor)
            reading = device.sign_reading(measurements)
            if device.http is not None:  # the HTTP API's /readings/latest is its only reader
                device.latest[name] = reading
            device.put("reading", reading)
        except Exception as error:  # one failing sensor never stops the others
            log("sensor %s: %s %s" % (name, type(error).__name__, error))
        await asyncio.sleep(device.config["intervals"].get(name, sensor["interval_s"]))
