"""Bosch BME280 over I2C: forced-mode reads with the datasheet's integer compensation (section 4.2.3).

`compensate()` is pure (raw ADC values and calibration in, SI values out) so it runs on the host too.
"""

import struct
import time

ADDRESS = 0x76


def parse_calibration(block1, block2):
    """Calibration from registers 0x88..0xA1 (26 bytes) and 0xE1..0xE7 (7 bytes)."""
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9 = struct.unpack("<HhhHhhhhhhhh", block1[:24])
    h1 = block1[25]
    h2, h3 = struct.unpack("<hB", block2[:3])
    e4, e5, e6 = block2[3], block2[4], block2[5]
    h4 = (e4 << 4) | (e5 & 0x0F)
    h5 = (e6 << 4) | (e5 >> 4)
    h4 = h4 - 4096 if h4 & 0x800 else h4  # 12-bit two's complement
    h5 = h5 - 4096 if h5 & 0x800 else h5
    h6 = struct.unpack("<b", block2[6:7])[0]
    return (t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9, h1, h2, h3, h4, h5, h6)


def compensate(raw, cal):
    """Return (temperature degC, pressure hPa, humidity %RH) from the 8 data bytes at 0xF7."""
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9, h1, h2, h3, h4, h5, h6 = cal
    adc_p = (raw[0] << 12) | (raw[1] << 4) | (raw[2] >> 4)
    adc_t = (raw[3] << 12) | (raw[4] << 4) | (raw[5] >> 4)
    adc_h = (raw[6] << 8) | raw[7]
    var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
    t_fine = var1 + var2
    temperature = ((t_fine * 5 + 128) >> 8) / 100
    var1 = t_fine - 128000
    var2 = var1 * var1 * p6 + ((var1 * p5) << 17) + (p4 << 35)
    var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
    var1 = (((1 << 47) + var1) * p1) >> 33
    pressure = 0.0
    if var1:
        p = 1048576 - adc_p
        p = (((p << 31) - var2) * 3125) // var1
        var1 = (p9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (p8 * p) >> 19
        pressure = (((p + var1 + var2) >> 8) + (p7 << 4)) / 256 / 100
    h = t_fine - 76800
    h = (((adc_h << 14) - (h4 << 20) - (h5 * h)) + 16384) >> 15
    h = h * (
        ((((((t_fine - 76800) * h6) >> 10) * ((((t_fine - 76800) * h3) >> 11) + 32768)) >> 10) + 2097152) * h2
        + 8192
        >> 14
    )
    h = h - (((((h >> 15) * (h >> 15)) >> 7) * h1) >> 4)
    h = 0 if h < 0 else (419430400 if h > 419430400 else h)
    return temperature, pressure, (h >> 12) / 1024


class BME280:
    """One BME280 on an I2C bus (machine.I2C)."""

    def __init__(self, i2c, address=ADDRESS):
        self.i2c = i2c
        self.address = address
        if i2c.readfrom_mem(address, 0xD0, 1)[0] != 0x60:
            raise OSError("no BME280 at I2C address 0x%02x" % address)
        self.calibration = parse_calibration(
            i2c.readfrom_mem(address, 0x88, 26), i2c.readfrom_mem(address, 0xE1, 7)
        )
        self.raw = bytearray(8)

    def read(self):
        self.i2c.writeto_mem(self.address, 0xF2, b"\x01")  # humidity oversampling x1
        self.i2c.writeto_mem(self.address, 0xF4, b"\x25")  # temperature and pressure x1, forced mode
        time.sleep_ms(10)
        self.i2c.readfrom_mem_into(self.address, 0xF7, self.raw)
        return compensate(self.raw, self.calibration)
