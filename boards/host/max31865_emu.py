"""An emulated MAX31865 behind an emulated SPI bus and chip-select pin (host board).

    emu = MAX31865Emu(r_ref_ohm=4300, now_ms=clock.ticks_ms, ticks_diff=clock.ticks_diff)
    rtd = MAX31865(emu.spi, emu.cs, wires=3, filter_hz=50, r_ref_ohm=4300, r0_ohm=1000)
    emu.set_resistance(1270.75)          # the physical RTD, set by the plant model
    emu.inject("open")                   # a wiring fault; "none" heals it

This is the host board's hardware: MicroPython code the driver talks to exactly as it
talks to a real chip. It is never imported by firmware/ or lib/.

Register file (datasheet "Internal Registers"): read addresses 0x00-0x07, write
0x80-0x86; 0x87 (fault status) is read-only, writes to it change nothing. The first
byte after CS falls is the address; further bytes auto-increment, wrapping 0x7F -> 0x00
(0xFF -> 0x80); unknown addresses read 0xFF. SDO is high impedance during the address
byte, on writes and while CS is high; the bus is pulled up, so those bytes read 0xFF
and a transfer with CS high does nothing.

Configuration register, as emulated:
- D7 VBIAS: switching it on starts the settling clock (`bias_settle_ms`, default 10);
  a conversion that starts before VBIAS has settled reads low in proportion (the
  input-filter capacitors are still charging); with VBIAS off the result is noise.
- D6 auto: continuous conversions; the first result after entering auto mode takes a
  1-shot time, then one every period.
- D5 1-shot: the conversion starts when CS goes high after the write (datasheet); the
  bit reads 1 until the result is in, then self-clears. Ignored in auto mode.
- D4 3-wire, D0 50 Hz filter: stored (the filter sets the timing).
- D3:D2 fault-detection cycle: 01 written as 100X010X runs the automatic cycle, read
  back as 01 for 550 µs (<= 600 µs per datasheet; with a millisecond clock that is
  "done by the next millisecond"), then 00. Manual mode: 10 (step 1, reads back 10),
  then 11 (step 2, done after 550 µs).
- D1 fault clear: with D5, D3 and D2 written 0, clears fault status D7:D2; self-clears.
Timing (µs): 1-shot 62500 / 52000 typical, 66000 / 55000 max (50 / 60 Hz filter);
continuous period 20000 / 16667 typical, 21000 / 17500 max. `timing="max"` (the
default) makes the emulated chip as slow as the datasheet allows, so a driver that
reads at the typical time gets the previous result, as it would on a slow part.

The analogue imperfections a calibration corrects are the outside world's (the harness's
per-scenario sensor model): `r_ref_ohm` is the reference resistor actually fitted (the
driver is told the nominal value; a 0.1 % resistor is within 4300 ± 4.3 ohm), and
`noise_lsb` adds conversion noise, uniform within ± that many LSB before rounding (from a
seeded generator: runs stay deterministic). Both default to the ideal chip: nominal
reference, no noise.

Every conversion compares the 15-bit code with the thresholds (register >> 1, LSB is
don't-care): code >= high sets D7, code <= low sets D6 (power-on 0xFFFF / 0x0000:
full scale trips D7 and a dead short trips D6 even with untouched thresholds). Fault
status latches until cleared; the RTD LSB fault flag (D0 of 0x02) reads 1 while any
status bit is latched. Code quantisation: nearest LSB, code = int(R * 32768 / Rref +
0.5); the datasheet's Table 9 and the 70 °C PT1000 example (1270.75 ohm, 4300 ohm ->
9684, not the truncated 9683) both follow rounding.

Injected faults (datasheet Tables 10-12, "Decoding RTD faults"):
- "open": RTD element open. No current through the RTD: conversions read full scale
  (0x7FFF) -> D7 (RTD >= high threshold); the fault-detection cycle sees REFIN- pulled
  up to VBIAS (no current through Rref) -> D5 (REFIN- > 0.85 VBIAS).
- "short": RTD element shorted (RTDIN+ to RTDIN-): conversions read 0 -> D6
  (RTD <= low threshold); the cycle finds nothing.
- "force_open": the FORCE- lead unconnected (Table 12 "Force- unconnected", D5). No
  excitation current: the data are "indeterminate" (emulated as pseudo-random codes,
  which may look valid), the cycle sets D5 (REFIN- > 0.85 VBIAS). The datasheet's
  "(FORCE- open)" on D4/D3 names the chip's internal FORCE- switch during the cycle,
  not this broken wire: an open FORCE- lead does not set D4/D3.
- "rtdin_short_low": RTDIN- shorted to ground (Tables 10/11): current bypasses the
  FORCE- switch, so the data "appear to be valid"; only the cycle catches it: with the
  switch open REFIN- and RTDIN- stay low -> D4 and D3.
- "overvoltage": an input beyond VDD or below GND1 (cable touching 24 V): D2 is set
  continuously, i.e. again right after every clear (datasheet note on D1), data
  indeterminate (noise).
- "none": healthy again; latched bits stay until a fault clear.
The object is also its own SPI bus (`emu.spi`: `write_readinto`, the driver's whole
bus contract) and its own chip-select pin (`emu.cs`: `init(value=)`, `value()`): one
object per emulated chip instead of three, which a 64 KB node heap notices.
Also: `present = False` is an absent chip (SDO floats high: every byte 0xFF, writes
lost), `sdo_stuck = 0x00 / 0xFF` a broken SDO line (the chip still takes writes), and
`power_cycle()` a brown-out reset (registers back to power-on values).
Datasheet rules a driver breaks (1-shot with VBIAS off, filter change in auto mode,
a malformed fault-cycle or fault-clear write) are appended to `violations`.
"""

import time

from micropython import const

_POR = b"\x00\x00\x00\xff\xff\x00\x00"  # registers 0x00-0x06 at power-on
_FULL_SCALE = const(0x7FFF)
_CYCLE_US = const(550)

# Index: 0 (50 Hz) or 2 (60 Hz), + 1 for the datasheet maximum, + 0 for typical.
_ONE_SHOT_US = (62500, 66000, 52000, 55000)
_PERIOD_US = (20000, 21000, 16667, 17500)

_D7 = const(0x80)
_D6 = const(0x40)
_D5 = const(0x20)
_D4 = const(0x10)
_D3 = const(0x08)
_D2 = const(0x04)

INJECTIONS = ("none", "open", "short", "force_open", "rtdin_short_low", "overvoltage")


class MAX31865Emu:
    OUT = 1  # machine.Pin.OUT (the chip-select side)

    # Class defaults: an instance stores only what it changes (four chips per node).
    present = True
    sdo_stuck = None  # 0x00: SDO shorted low, 0xFF: floating high
    conversions = 0
    fault = "none"
    noise_lsb = 0.0  # conversion noise, uniform within ± this many LSB (0: none)
    violations = ()  # a list from the first broken rule on
    _v = 1  # chip-select level (idle high)
    _slow = 1
    _settle_us = 10000
    _noise_state = 12345
    # power-on state (power_cycle() writes it back)
    _status = 0
    _bias_on_us = None
    _arm_one_shot = False
    _one_shot_start = None
    _one_shot_end = None
    _auto_start = None
    _auto_done = 0
    _cycle = 0  # D3:D2 as read back
    _cycle_end = None
    _addr = None

    def __init__(self, *, r_ref_ohm, r_ohm=0.0, now_ms=None, ticks_diff=None, timing="max",
                 bias_settle_ms=10, seed=12345):
        if timing not in ("max", "typical"):
            raise ValueError("timing is 'max' or 'typical'")
        self.r_ref_ohm = r_ref_ohm
        self._now_ms = time.ticks_ms if now_ms is None else now_ms
        self._ticks_diff = time.ticks_diff if ticks_diff is None else ticks_diff
        if timing != "max":
            self._slow = 0
        if bias_settle_ms != 10:
            self._settle_us = bias_settle_ms * 1000
        if seed != 12345:
            self._noise_state = seed
        self.spi = self.cs = self
        self._r_ohm = float(r_ohm)
        # Internal time: a µs count advanced by ticks_diff of the caller's clock, so a
        # clock that wraps (2^30 ms on the targets) is handled the way drivers must.
        self._last_ms = self._now_ms()
        self._t_us = 0
        self._regs = bytearray(_POR)

    # -- the outside world --------------------------------------------------------

    def set_resistance(self, r_ohm):
        """The physical RTD's resistance from now on (conversions already due keep
        the old value)."""
        self._tick()
        self._r_ohm = float(r_ohm)

    def inject(self, fault):
        """Wire a fault in (see module doc); "none" heals."""
        if fault not in INJECTIONS:
            raise ValueError("unknown fault %r; one of %r" % (fault, INJECTIONS))
        self._tick()
        self.fault = fault
        if fault == "overvoltage":
            self._status |= _D2

    def power_cycle(self):
        """Power-on reset: registers to their POR values, conversions stopped."""
        self._regs = bytearray(_POR)
        self._status = 0
        self._bias_on_us = None
        self._arm_one_shot = False
        self._one_shot_start = None
        self._one_shot_end = None
        self._auto_start = None
        self._auto_done = 0
        self._cycle = 0
        self._cycle_end = None
        self._addr = None

    def code_for(self, r_ohm):
        """The 15-bit code this chip reports for r_ohm (nearest LSB, clamped)."""
        code = int(r_ohm * 32768 / self.r_ref_ohm + 0.5)
        return max(0, min(code, _FULL_SCALE))

    @property
    def config(self):
        self._tick()
        return self._read(0)

    @property
    def fault_status(self):
        self._tick()
        return self._status

    def register(self, addr):
        """Peek a register as an SPI read would return it (no bus traffic)."""
        self._tick()
        return self._read(addr)

    # -- chip-select pin (machine.Pin: init, value) and SPI bus (write_readinto, all
    # the driver needs) ----------------------------------------------------------

    def init(self, *args, **kwargs):
        if "value" in kwargs:
            self.value(kwargs["value"])

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v == self._v:
            return
        self._v = v
        self._tick()
        if not v:
            self._addr = None  # next byte is an address
        elif self._arm_one_shot:  # CS high after a 1-shot write starts it
            self._arm_one_shot = False
            if not self._regs[0] & _D6:
                if self._bias_on_us is None:
                    self._violate("1-shot started with VBIAS off")
                self._one_shot_start = self._t_us
                self._one_shot_end = self._t_us + _ONE_SHOT_US[self._row()]

    def write_readinto(self, write_buf, read_buf):
        if len(write_buf) != len(read_buf):
            raise ValueError("buffers must be the same length")
        self._xfer_into(write_buf, read_buf)

    # -- bus side -----------------------------------------------------------------

    def _xfer_into(self, write_buf, read_buf):
        """A transaction's bytes: 0xFF while deselected or absent; a stuck SDO reads
        stuck while the chip still hears."""
        n = len(write_buf)
        if self._v or not self.present:
            for i in range(n):
                read_buf[i] = 0xFF
            return
        stuck = self.sdo_stuck
        for i in range(n):
            b = self._xfer_chip(write_buf[i])
            read_buf[i] = b if stuck is None else stuck

    def _xfer_chip(self, byte):
        addr = self._addr
        if addr is None:
            self._addr = byte
            return 0xFF
        if addr & 0x80:
            reg = addr & 0x7F
            if reg == 0:
                self._write_config(byte)
            elif reg <= 6:
                self._regs[reg] = byte
            self._addr = 0x80 | ((reg + 1) & 0x7F)
            return 0xFF
        self._addr = (addr + 1) & 0x7F
        return self._read(addr)

    def _read(self, addr):
        if addr == 0:
            v = self._regs[0] | (self._cycle << 2)
            if self._one_shot_end is not None or self._arm_one_shot:
                v |= _D5
            return v
        if addr == 2:
            return self._regs[2] | (1 if self._status else 0)
        if addr == 7:
            return self._status
        if addr <= 6:
            return self._regs[addr]
        return 0xFF

    def _violate(self, rule):
        if not self.violations:
            self.violations = []
        self.violations.append(rule)

    def _write_config(self, v):
        old = self._regs[0]
        t = self._t_us
        if v & _D7 and not old & _D7:
            self._bias_on_us = t
        elif not v & _D7:
            self._bias_on_us = None
        if v & _D6 and not old & _D6:
            if not v & _D7:
                self._violate("auto conversion with VBIAS off")
            self._auto_start = t
            self._auto_done = 0
        elif not v & _D6:
            self._auto_start = None
        if (v ^ old) & 0x01 and old & _D6 and v & _D6:
            self._violate("filter changed in auto mode")
        if v & _D5:
            if v & _D6:
                self._violate("1-shot written in auto mode")
            else:
                self._arm_one_shot = True
        cycle = (v >> 2) & 3
        if cycle == 1 or cycle == 2:
            if v & 0xE2 != 0x80:
                self._violate("bad fault-cycle write 0x%02x" % v)
            elif self._cycle == 0 and cycle == 1:
                self._cycle = 1
                self._cycle_end = t + _CYCLE_US
            elif self._cycle == 0:
                self._cycle = 2  # manual step 1: FORCE- switch closed, check REFIN-
                self._status |= self._cycle_faults() & _D5
        elif cycle == 3:
            if self._cycle == 2:
                self._cycle = 3  # manual step 2: FORCE- switch open
                self._cycle_end = t + _CYCLE_US
            else:
                self._violate("fault cycle step 2 before 1")
        if v & 0x02:
            if v & (_D5 | 0x0C):
                self._violate("fault clear with D5/D3/D2 set")
            else:
                self._status = _D2 if self.fault == "overvoltage" else 0
        self._regs[0] = v & 0xD1

    # -- the analogue side ----------------------------------------------------------

    def _row(self):
        # index into _ONE_SHOT_US / _PERIOD_US: filter (D0) and timing
        return (0 if self._regs[0] & 0x01 else 2) + self._slow

    def _tick(self):
        now = self._now_ms()
        d = self._ticks_diff(now, self._last_ms)
        self._last_ms = now
        if d > 0:
            self._t_us += d * 1000
        t = self._t_us
        if self._one_shot_end is not None and t >= self._one_shot_end:
            self._convert(self._one_shot_start)
            self._one_shot_end = None
        if self._auto_start is not None:
            row = self._row()
            first = _ONE_SHOT_US[row]
            period = _PERIOD_US[row]
            elapsed = t - self._auto_start
            if elapsed >= first:
                n = 1 + (elapsed - first) // period
                if n > self._auto_done:  # only the latest result is visible
                    end = self._auto_start + first + (n - 1) * period
                    self._convert(end - (first if n == 1 else period))
                    self._auto_done = n
        if self._cycle_end is not None and t >= self._cycle_end:
            faults = self._cycle_faults()
            self._status |= faults if self._cycle == 1 else faults & (_D4 | _D3)
            self._cycle = 0
            self._cycle_end = None
        if self.fault == "overvoltage":
            self._status |= _D2

    def _cycle_faults(self):
        f = self.fault
        if f == "open" or f == "force_open":
            return _D5
        if f == "rtdin_short_low":
            return _D4 | _D3
        return 0

    def _noisy(self, r_ohm):
        # nearest LSB of the ratio plus uniform noise within ± noise_lsb
        self._noise_state = (self._noise_state * 1103515245 + 12345) & 0x7FFFFFFF
        u = ((self._noise_state >> 7) & 0xFFFFFF) / 16777216.0  # 0 <= u < 1
        x = r_ohm * 32768 / self.r_ref_ohm + 0.5 + (2.0 * u - 1.0) * self.noise_lsb
        return max(0, min(int(x) if x > 0 else 0, _FULL_SCALE))

    def _convert(self, start_us):
        self.conversions += 1
        f = self.fault
        if f == "open":
            code = _FULL_SCALE
        elif f == "force_open" or f == "overvoltage" or self._bias_on_us is None:
            # indeterminate data: pseudo-random codes
            self._noise_state = (self._noise_state * 1103515245 + 12345) & 0x7FFFFFFF
            code = (self._noise_state >> 8) & _FULL_SCALE
        else:
            r_ohm = 0.0 if f == "short" else self._r_ohm
            settled = (start_us - self._bias_on_us) / self._settle_us
            if settled < 1.0:
                r_ohm *= max(settled, 0.0)
            code = self.code_for(r_ohm) if not self.noise_lsb else self._noisy(r_ohm)
        regs = self._regs
        regs[1] = code >> 7
        regs[2] = (code << 1) & 0xFE
        if code >= ((regs[3] << 8) | regs[4]) >> 1:
            self._status |= _D7
        if code <= ((regs[5] << 8) | regs[6]) >> 1:
            self._status |= _D6
