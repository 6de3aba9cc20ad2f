"""Hardware layer of ESP32 boards: the only module (with the drivers it loads) that imports
machine, network and esp32. Pins and sensors come from the board's data file (board.json)."""

import time

import esp32
import machine
import network

from fp import const, sensor_types

_WATCHDOG_MS = const(30000)
# MicroPython's embedded ports may count time from 2000; the protocol speaks Unix time.
_EPOCH_OFFSET = 0 if time.gmtime(0)[0] == 1970 else 946684800


class Board:
    """An ESP32-family board: Wi-Fi, NTP, watchdog, button, LED and the fitted sensors."""

    lan_host = "0.0.0.0"  # the local HTTP API listens on the Wi-Fi interface

    def __init__(self, board, provision):
        self.board = board
        self.provision = provision
        pins = board["pins"]
        self.led = machine.Pin(pins["led"], machine.Pin.OUT) if pins.get("led") is not None else None
        self._pressed = False
        if pins.get("button") is not None:
            self.button = machine.Pin(pins["button"], machine.Pin.IN, machine.Pin.PULL_UP)
            self.button.irq(trigger=machine.Pin.IRQ_FALLING, handler=self._on_press)
        self.i2c = None
        if pins.get("i2c_sda") is not None and pins.get("i2c_scl") is not None:
            self.i2c = machine.I2C(
                0, sda=machine.Pin(pins["i2c_sda"]), scl=machine.Pin(pins["i2c_scl"]), freq=400000
            )
        self.wlan = network.WLAN(network.STA_IF)
        self.wdt = None
        self._time_known = False
        self._drivers: dict = {}  # sensor name -> its driver, made on first read

    def _on_press(self, pin):
        self._pressed = True

    def start(self):
        """Bring up Wi-Fi (the radio also makes os.urandom truly random) and the watchdog."""
        self.wlan.active(True)
        wifi = self.provision.get("wifi") or {}
        if wifi.get("ssid"):
            self.wlan.connect(wifi["ssid"], wifi.get("password", ""))
        self.wdt = machine.WDT(timeout=_WATCHDOG_MS)

    def feed(self):
        if self.wdt:
            self.wdt.feed()
        if not self._time_known and self.wlan.isconnected():
            try:
                import ntptime

                ntptime.settime()
                self._time_known = True
            except (OSError, OverflowError):
                pass  # tried again on the next feed; the counters are the authority anyway

    def release(self):
        """Hand the board to the REPL (Ctrl-C, or a crash in safe mode).

        The ESP32 watchdog cannot be stopped once started, so a timer feeds it from here on:
        otherwise it would reset the board under the person at the REPL.
        """
        if self.wdt:
            wdt = self.wdt
            self._repl_timer = machine.Timer(0)
            self._repl_timer.init(period=_WATCHDOG_MS // 3, callback=lambda timer: wdt.feed())

    def is_power_on_boot(self):
        """True when this boot follows a power cut, not a crash, a watchdog or a reset."""
        return machine.reset_cause() == machine.PWRON_RESET

    def network_up(self):
        return self.wlan.isconnected()

    def button_pressed(self):
        pressed, self._pressed = self._pressed, False
        return pressed

    def time_s(self):
        return time.time() + _EPOCH_OFFSET if self._time_known else None

    def set_time(self, unix_s):
        """Take a lower bound of the time from a verified owner command when NTP is unavailable."""
        if not self._time_known:
            now = time.gmtime(unix_s - _EPOCH_OFFSET)
            machine.RTC().datetime((now[0], now[1], now[2], now[6], now[3], now[4], now[5], 0))
            self._time_known = True

    def read(self, sensor):
        """Return [(name, unit, value), ...] from one fitted sensor."""
        return sensor_types.read(self, sensor)

    def _driver(self, sensor, make):
        """The sensor's driver object, made on first read: a missing sensor fails only its own reads."""
        name = sensor["name"]
        if name not in self._drivers:
            self._drivers[name] = make(sensor)
        return self._drivers[name]

    # The drivers (fp.sensor_types): raw values in the order of the type's metrics.

    def read_internal_temp(self, sensor):
        mcu_temperature = getattr(esp32, "mcu_temperature", None)  # ESP32-S2, -S3, -C3
        if mcu_temperature is not None:
            return (float(mcu_temperature()),)
        return ((esp32.raw_temperature() - 32) / 1.8,)  # ESP32: Fahrenheit

    def read_adc(self, sensor):
        return (self._driver(sensor, _open_adc).read_uv() / 1000000,)

    def read_dht22(self, sensor):
        driver = self._driver(sensor, _open_dht22)
        driver.measure()
        return (float(driver.temperature()), float(driver.humidity()))

    def read_bme280(self, sensor):
        if self.i2c is None:
            raise OSError("bme280 needs i2c_sda and i2c_scl pins")
        i2c = self.i2c
        driver = self._driver(sensor, lambda s: _open_bme280(i2c, s))
        temperature, pressure, humidity = driver.read()
        return (temperature, humidity, pressure)

    def reset(self):
        machine.reset()


def _open_adc(sensor):
    adc = machine.ADC(machine.Pin(sensor["pin"]))
    adc.atten(machine.ADC.ATTN_11DB)
    return adc


def _open_dht22(sensor):
    import dht

    return dht.DHT22(machine.Pin(sensor["pin"]))


def _open_bme280(i2c, sensor):
    from fp.bme280 import BME280

    return BME280(i2c, sensor.get("i2c_address", sensor_types.DEFAULT_I2C_ADDRESS))
