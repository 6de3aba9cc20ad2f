"""Hardware layer of the `sim` board (the unix port): deterministic sensors, a network that tests
can cut, a button that tests can press. Marker files in the flash root stand in for the physical
world: `net.down` cuts the network, `button.press` is a press of the button (consumed when read).
"""

import math
import os
import time

NET_DOWN_FILE = "net.down"
BUTTON_FILE = "button.press"


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class SimBoard:
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
        return not _exists(NET_DOWN_FILE)

    def button_pressed(self):
        if _exists(BUTTON_FILE):
            os.remove(BUTTON_FILE)
            return True
        return False

    def time_s(self):
        return int(time.time())

    def read(self, sensor):
        """Return [(name, unit, value), ...] for a fitted sensor: deterministic by sample count."""
        n = self._samples.get(sensor["name"], 0)
        self._samples[sensor["name"]] = n + 1
        kind = sensor["type"]
        phase = n / 10.0
        if kind == "internal-temp":
            return [(sensor["name"], "Cel", 40.0 + 2.0 * math.sin(phase))]
        if kind == "bme280":
            return [
                ("temp", "Cel", 21.0 + math.sin(phase)),
                ("hum", "%RH", 45.0 + 5.0 * math.cos(phase)),
                ("press", "hPa", 1013.25 + math.sin(phase / 3)),
            ]
        if kind == "dht22":
            return [("temp", "Cel", 22.5 + math.cos(phase)), ("hum", "%RH", 50.0 + 3.0 * math.sin(phase))]
        if kind == "counter":  # the sample number itself: lets tests see that none is missing
            return [(sensor["name"], None, n)]
        if kind == "adc":
            return [(sensor["name"], "V", 1.65 + 1.0 * math.sin(phase))]
        raise ValueError("sim board has no sensor of type " + str(kind))

    def reset(self):
        raise SystemExit(0)  # the unix port exits where a board resets; the launcher restarts it
