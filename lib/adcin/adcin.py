"""Oversampling ADC input: one reading = the trimmed mean of N conversions, in µV at the pin.

    a = ADCInput(ADC(Pin(35), atten=ADC.ATTN_11DB), samples=16)   # ESP32: read_uv()
    a = ADCInput(ADC(26), samples=16, uv_full_scale=3_300_000)     # RP2040: read_u16()
    uv = a.read_uv()      # µV at the pin, an int; allocation-free
    a.spread_uv           # max - min of the conversions the mean kept (noise figure)

An ADC object with `read_uv()` (the ESP32 port: the conversion corrected with the chip's
eFuse calibration) is read in µV directly. Otherwise `read_u16()` (0..65535 for 0 V ..
the reference) is scaled with `uv_full_scale`, the µV that 65535 stands for, in fixed
point: µV = (mean * s + 128) >> 8, s = uv_full_scale * 256 / 65536 rounded.

The N conversions go into a buffer allocated once; they are sorted in place (insertion
sort: N is small) and the `trim` lowest and highest are dropped before the mean, so a
burst of interference (Wi-Fi transmitting, a relay switching) moves the reading by less
than one conversion's worth. Every intermediate stays a small int on a 32-bit port
(N <= 64, µV < 4 000 000: sums < 2**28), so a read allocates nothing.

Runs unchanged on CPython (the host's fail-safe oracle reads the same arithmetic).
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_MAX_SAMPLES = const(64)
_MAX_UV = const(4_000_000)  # 4 V: above every ADC's range here; keeps sums small ints


class ADCInput:
    def __init__(self, adc, samples=16, trim=None, uv_full_scale=None):
        """adc: a machine.ADC (read_uv() or read_u16()); samples: conversions per
        reading, 3..64; trim: dropped at each end (default samples // 4); uv_full_scale:
        µV at read_u16() == 65535, needed when the ADC has no read_uv()."""
        if type(samples) is not int or not 3 <= samples <= _MAX_SAMPLES:
            raise ValueError("samples must be 3..%d" % _MAX_SAMPLES)
        if trim is None:
            trim = samples // 4
        if type(trim) is not int or trim < 0 or 2 * trim >= samples:
            raise ValueError("trim must leave at least one conversion")
        self._adc = adc
        self._n = samples
        self._trim = trim
        self._buf = array("i", [0] * samples)
        self._uv = getattr(adc, "read_uv", None)
        self._u16 = None
        self._s = 0
        if self._uv is None:
            if type(uv_full_scale) is not int or not 0 < uv_full_scale <= _MAX_UV:
                raise ValueError("an ADC without read_uv() needs uv_full_scale (µV), "
                                 "1..%d" % _MAX_UV)
            self._u16 = adc.read_u16
            self._s = (uv_full_scale * 256 + 32768) // 65536
        self.spread_uv = 0

    def read_uv(self):
        """The trimmed mean of `samples` conversions, µV at the pin (an int >= 0)."""
        buf = self._buf
        n = self._n
        rd = self._uv
        if rd is None:
            rd = self._u16
        for i in range(n):
            v = rd()
            # insertion: buf[0..i) is sorted
            j = i
            while j > 0 and buf[j - 1] > v:
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = v
        lo = self._trim
        hi = n - lo
        total = 0
        for i in range(lo, hi):
            total += buf[i]
        k = hi - lo
        mean = (total + k // 2) // k
        spread = buf[hi - 1] - buf[lo]
        if self._uv is None:
            mean = (mean * self._s + 128) >> 8
            spread = (spread * self._s + 128) >> 8
        if mean < 0:  # no port reads below 0 V; a driver bug must not look like a signal
            mean = 0
        self.spread_uv = spread
        return mean
