"""The analogue inputs as the node's ADC sees them (CPython): transmitters, the front end,
the converter and the node's own conversion.

The plant's quantities become the signals at the node's terminals here (the valve's
position feedback, the loop pressure and tank level transmitters, wire breaks), and what
the node makes of a signal is computed with the node's own code: the host board's
converter (boards/host/adc_emu.py), lib/adcin and heatgw.analog, imported unchanged, with
the host board's front-end constants. So the oracle's view of "valve at 40 %" or "loop
pressure 0.6 bar" is the node's to the last milli-unit, without asking the node.

A scenario's `analog_model` says how each transmitter differs from the node's
configuration (default: not at all): `{"<input>": {"signal_lo": 4.2, "signal_hi": 19.7}}`
(the transmitter's own ends, in mA or V); `analog_noise_lsb` adds conversion noise.
"""

import ast
import importlib.util
import sys

from host_tools.paths import BOARDS, FIRMWARE, LIB

for _p in (FIRMWARE, LIB / "adcin"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from heatgw import analog  # noqa: E402  (needs firmware/ on sys.path)

_spec = importlib.util.spec_from_file_location("adc_emu", BOARDS / "host" / "adc_emu.py")
adc_emu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(adc_emu)

_UNIT_PER_BAR = {"bar": 1.0, "mbar": 1000.0, "kPa": 100.0, "psi": 14.503773773}
_FAULT_SIGNAL = {"open": ("open", 0.0), "high_ma": ("ma", 22.0), "high_v": ("v", 11.0)}


def host_constants():
    """The host board's front-end constants, read from boards/host/board.py (that file
    is MicroPython and imports the link, so it is parsed, not imported)."""
    want = ("AIN_SHUNT_OHM", "AIN_DIVIDER", "ADC_UV_FULL_SCALE", "ADC_CHANNELS",
            "VALVE_OUT_FULL_V")
    out = {}
    path = BOARDS / "host" / "board.py"
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) in want):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    missing = set(want) - set(out)
    if missing:
        raise ValueError(f"{path}: no {sorted(missing)}")
    return out


class _Board:
    """What heatgw.analog asks of a board: the host board's front end and converter."""

    def __init__(self):
        for k, v in host_constants().items():
            setattr(self, k, v)
        self.adcs = {}

    def adc(self, channel):
        if channel not in self.ADC_CHANNELS:
            raise ValueError(f"no ADC channel {channel!r}")
        a = self.adcs.get(channel)
        if a is None:
            a = self.adcs[channel] = adc_emu.ADCEmu(self.AIN_SHUNT_OHM, self.AIN_DIVIDER)
        return a


class Transmitters:
    """The configured analogue inputs (the node's `analog` section): their signals from
    the plant, and what the node reads from them."""

    def __init__(self, acfg, scenario):
        self.cfg = {}
        if acfg:  # with the defaults the node fills in (its own validator)
            from heatgw import anschema
            from heatgw.schema import validate

            self.cfg, errors = validate(acfg, anschema.ANALOG)
            if errors:
                raise ValueError(f"analog: {errors}")
        self.items = {}  # name -> its config (the valve's too)
        if self.cfg.get("valve"):
            self.items[analog.VALVE] = self.cfg["valve"]
        for name, c in (self.cfg.get("inputs") or {}).items():
            self.items[name] = c
        self.model = scenario.get("analog_model") or {}
        self.noise_lsb = int(scenario.get("analog_noise_lsb", 0))
        self.faults = {}  # name -> "open" | "high"
        self.board = _Board()
        self.node_view = analog.Analog(self.cfg, self.board) if self.items else None
        self._seen = {}  # name -> (signal, what the node reads of it)

    def __bool__(self):
        return bool(self.items)

    def channel(self, name):
        return self.items[name]["channel"]

    def _ends(self, name):
        c = self.items[name]
        lo, hi = analog.signal_ends(c)
        m = self.model.get(name) or {}
        return m.get("signal_lo", lo), m.get("signal_hi", hi)

    def quantity(self, name, plant):
        """The measured quantity, in the input's unit: the valve's position (%), the
        loop pressure, the tank level."""
        if name == analog.VALVE:
            return plant.valve_position * 100.0
        c = self.items[name]
        if c["kind"] == "pressure":
            return plant.loop_pressure_bar * _UNIT_PER_BAR[c["unit"]]
        if c["unit"] == "m":
            return plant.tank_level_pct / 100.0 * plant.params.tank_height_m
        return plant.tank_level_pct

    def signal(self, name, plant):
        """(kind, value) at the terminals: "ma" or "v" and the transmitter's output for
        the plant's quantity (saturating as real ones do: 3.8..20.5 mA, NAMUR NE 43), or
        a fault's."""
        c = self.items[name]
        cur = c["signal"] == "4-20mA"
        fault = self.faults.get(name, "none")
        if fault == "open":
            return _FAULT_SIGNAL["open"]
        if fault == "high":
            return _FAULT_SIGNAL["high_ma" if cur else "high_v"]
        lo, hi = self._ends(name)
        if name == analog.VALVE:
            v_lo, v_hi = 0.0, 100.0
        else:
            v_lo, v_hi = c["value_lo"], c["value_hi"]
        q = self.quantity(name, plant)
        s = lo + (q - v_lo) / (v_hi - v_lo) * (hi - lo)
        if cur:
            s = min(max(s, 3.8), 20.5)
        else:
            s = min(max(s, 0.0), 10.5)
        return ("ma" if cur else "v"), round(s, 6)

    def seen(self, name, plant):
        """(milli-units or None, reason or None): what the node reads, noise aside."""
        sig = self.signal(name, plant)
        hit = self._seen.get(name)
        if hit is not None and hit[0] == sig:
            return hit[1]
        self.board.adc(self.channel(name)).set_signal(*sig)
        ch = self.node_view._by_name[name]
        ch.sample()
        out = (ch.value, ch.why)
        self._seen[name] = (sig, out)
        return out
