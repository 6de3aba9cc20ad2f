"""Sensor types, each defined once: the ports that can read it, the pins it needs, its driver, and
the metrics it yields with their units.

Read by the device's board check (fp.settings), by both hardware layers (fp.hal_esp32 and fp.hal_sim
read a sensor through `read`: its type's driver, the values named with their units) and by the host's board
files (host_agent/boards.py runs the device's own check). A new type is one entry here and one
driver method in each hardware layer that can read it.
"""

from fp import const

# Every port that has a hardware layer (fp.hal_esp32: "esp32", fp.hal_sim: "unix").
PORTS = ("esp32", "unix")
# type -> (ports, needs, driver, metrics).
# needs: "pin" (the sensor's own GPIO, key `pin`), "i2c" (the board's i2c_sda/i2c_scl pins and the
# sensor's `i2c_address`), or None. driver: the hardware layer's method that reads the raw values,
# `read_<driver>(sensor)`. metrics: (name, SenML unit) per value the driver returns, in its order;
# the name None stands for the sensor's own name (one value), a unit None for a plain count.
TYPES = {
    "internal-temp": (PORTS, None, "internal_temp", ((None, "Cel"),)),
    "adc": (PORTS, "pin", "adc", ((None, "V"),)),
    "dht22": (PORTS, "pin", "dht22", (("temp", "Cel"), ("hum", "%RH"))),
    "bme280": (PORTS, "i2c", "bme280", (("temp", "Cel"), ("hum", "%RH"), ("press", "hPa"))),
    # the sample number itself: lets tests see that no reading is missing (sim board only)
    "counter": (("unix",), None, "counter", ((None, None),)),
}
# TYPES' keys in the order shown (a MicroPython dict has none); const: no name for it on a board
_NAMES = const(("internal-temp", "adc", "dht22", "bme280", "counter"))
DEFAULT_I2C_ADDRESS = 0x76


def for_port(port):
    """The sensor types a board of `port` can read, in a stable order."""
    return tuple(name for name in _NAMES if port in TYPES[name][0])


def read(hal, sensor):
    """Read one fitted sensor through `hal`'s driver for its type: [(name, unit, value), ...], the
    driver's values named as the type's metrics say."""
    _, _, driver, metrics = TYPES[sensor["type"]]
    values = getattr(hal, "read_" + driver)(sensor)
    out = []
    index = 0
    for name, unit in metrics:
        out.append((name or sensor["name"], unit, values[index]))
        index += 1
    return out
