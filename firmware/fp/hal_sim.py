"""Hardware layer of the `sim` board (the unix port): deterministic sensors, a network that tests
can cut, a button that tests can press. Marker files in the flash root stand in for the physical
world: `net.down` cuts the network, `button.press` is a press of the button (consumed when read).
"""

import math
import os
import time

from fp import const, sensor_types
from fp.storage import exists

_NET_DOWN_FILE = const("net.down")
_BUTTON_FILE = const("button.press")


class Board:
    """The sim board: same interface as the ESP32 HAL, no hardware."""

    name = "sim"
    lan_host = "127.0.0.1"  # the sim's LAN is the host's loopback

    def __init__(self, board):
        self.board = board
        self._samples = {}

    def start(self):
        """Nothing to bring up: the host's network is there (unless cut with the marker)."""

    def feed(self):
        """No watchdog on the host."""

    def release(self):
        """Nothing to hand over to the REPL: no watchdog."""

    def is_power_on_boot(self):
        """The unix port cannot tell a power cut (SIGKILL) from a crash: every boot counts."""
        return False

    def set_time(self, unix_s):
        """The host's clock is always known."""

    def network_up(self):
        return not exists(_NET_DOWN_FILE)

    def button_pressed(self):
        if exists(_BUTTON_FILE):
            os.remove(_BUTTON_FILE)
            return True
        return False

    def time_s(self):
        return int(time.time())

    def read(self, sensor):
        """Return [(name, unit, value), ...] for a fitted sensor: deterministic by sample count."""
        return sensor_types.read(self, sensor)

    def _phase(self, sensor):
        n = self._samples.get(sensor["name"], 0)
        self._samples[sensor["name"]] = n + 1
        return n

    # The drivers (fp.sensor_types): raw values in the order of the type's metrics.

    def read_internal_temp(self, sensor):
        return (40.0 + 2.0 * math.sin(self._phase(sensor) / 10.0),)

    def read_bme280(self, sensor):
        phase = self._phase(sensor) / 10.0
        return (21.0 + math.sin(phase), 45.0 + 5.0 * math.cos(phase), 1013.25 + math.sin(phase / 3))

    def read_dht22(self, sensor):
        phase = self._phase(sensor) / 10.0
        return (22.5 + math.cos(phase), 50.0 + 3.0 * math.sin(phase))

    def read_counter(self, sensor):
        return (self._phase(sensor),)

    def read_adc(self, sensor):
        return (1.65 + 1.0 * math.sin(self._phase(sensor) / 10.0),)

    def reset(self):
        raise SystemExit(0)  # the unix port exits where a board resets; the launcher restarts it
