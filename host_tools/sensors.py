"""The RTDs as the node's converter chips see them (CPython).

The physics is the firmware's own IEC 60751 module, firmware/heatgw/rtd.py, imported
unchanged; the reference resistor is the host board's R_REF_OHM, read from
boards/host/board.py (that file is MicroPython and imports the link, so it is parsed,
not imported).
"""

import ast
import sys

from host_tools.paths import BOARDS, FIRMWARE

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import rtd  # noqa: E402  (needs firmware/ on sys.path)

_CODES = 32768  # MAX31865: R = code * Rref / 32768


def board_constant(name, board="host"):
    """A module-level `NAME = <number>` of boards/<board>/board.py."""
    path = BOARDS / board / "board.py"
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name
                and isinstance(node.value, ast.Constant)):
            return node.value.value
    raise ValueError(f"{path}: no `{name} = <number>`")


R_REF_OHM = float(board_constant("R_REF_OHM"))  # the emulated converters' reference


def pt_ohm(t_c, r0_ohm=1000.0):
    """The RTD's resistance at a true t_c."""
    return rtd.resistance_ohm(t_c, r0_ohm)


def seen_temp_c(t_c, r0_ohm=1000.0):
    """The temperature a MAX31865 reports for a true t_c (nearest 15-bit code)."""
    code = int(pt_ohm(t_c, r0_ohm) * _CODES / R_REF_OHM + 0.5)
    return rtd.temp_c(rtd.code_to_ohm(code, R_REF_OHM), r0_ohm)


# -- what calibration corrects: the per-scenario sensor model ------------------------------

# IEC 60751 tolerance classes: ±(a + b·|t|) K (REFERENCE.md)
CLASS_LIMITS = {"AA": (0.10, 0.0017), "A": (0.15, 0.002), "B": (0.30, 0.005),
                "C": (0.60, 0.01)}
R_REF_TOLERANCE_PCT = 0.1  # the converter boards' reference resistors (0.1 %)
_SENSOR_KEYS = {"class", "class_sign", "lead_ohm", "r_ref_dev_pct", "noise_lsb"}


class SensorModel:
    """One RTD as installed, with what calibration corrects (all ideal by default):

    class_ / class_sign: the element's IEC 60751 class; it reads class_sign times the
        full class limit, a + b·|t| K, off (the worst case a class allows; signs chosen
        per sensor, e.g. supply +1 and return -1 for the largest ΔΘ error);
    lead_ohm: the 2-wire leads' resistance (both conductors), in series at the chip;
    r_ref_dev_pct: the chip's fitted reference resistor off nominal (%; 0.1 % parts:
        within ±0.1);
    noise_lsb: the chip's conversion noise, uniform within ± that many LSB.
    """

    def __init__(self, class_=None, class_sign=1, lead_ohm=0.0, r_ref_dev_pct=0.0,
                 noise_lsb=0.0, r0_ohm=1000.0):
        if class_ is not None and class_ not in CLASS_LIMITS:
            raise ValueError(f"class {class_!r}: one of {', '.join(CLASS_LIMITS)}")
        if class_sign not in (1, -1):
            raise ValueError("class_sign is 1 or -1")
        if not 0.0 <= lead_ohm <= 0.05 * r0_ohm:
            raise ValueError(f"lead_ohm {lead_ohm!r}: 0..{0.05 * r0_ohm:g} ohm")
        if not -1.0 <= r_ref_dev_pct <= 1.0:
            raise ValueError(f"r_ref_dev_pct {r_ref_dev_pct!r}: within ±1 % (0.1 % parts: "
                             f"±{R_REF_TOLERANCE_PCT})")
        if not 0.0 <= noise_lsb <= 4.0:
            raise ValueError(f"noise_lsb {noise_lsb!r}: 0..4")
        self.class_ = class_
        self.class_sign = class_sign
        self.lead_ohm = float(lead_ohm)
        self.r_ref_dev_pct = float(r_ref_dev_pct)
        self.noise_lsb = float(noise_lsb)
        self.r0_ohm = r0_ohm

    @property
    def r_ref_ohm(self):
        """The reference resistor fitted on this sensor's chip."""
        return R_REF_OHM * (1.0 + self.r_ref_dev_pct / 100.0)

    def error_k(self, t_c):
        """How far the element reads off at a true t_c (K)."""
        if self.class_ is None:
            return 0.0
        a, b = CLASS_LIMITS[self.class_]
        return self.class_sign * (a + b * abs(t_c))

    def element_ohm(self, t_c):
        """The element's resistance at a true t_c: an ideal one's at t_c + error_k."""
        return rtd.resistance_ohm(t_c + self.error_k(t_c), self.r0_ohm)

    def terminal_ohm(self, element_ohm):
        """What the chip measures for `element_ohm` at the sensor's end (or a precision
        resistor fitted there): the leads in series."""
        return element_ohm + self.lead_ohm


IDEAL = SensorModel()


def sensor_models(spec, sensors_cfg):
    """{name: SensorModel} from a scenario's `sensor_model` object:
    {"noise_lsb": 1.0, "supply": {"class": "B", "class_sign": 1, "lead_ohm": 1.2,
    "r_ref_dev_pct": -0.1, "noise_lsb": ...}, ...}; the top-level noise_lsb applies to
    every configured sensor's chip. ValueError for an unknown key or sensor, or leads on
    a sensor not wired with 2 wires (3 and 4 wires cancel them)."""
    spec = dict(spec or {})
    noise = spec.pop("noise_lsb", 0.0)
    out = {}
    for name, sc in sensors_cfg.items():
        s = dict(spec.pop(name, {}))
        bad = set(s) - _SENSOR_KEYS
        if bad:
            raise ValueError(f"sensor_model.{name}: unknown keys {sorted(bad)}")
        if s.get("lead_ohm") and sc["wires"] != 2:
            raise ValueError(f"sensor_model.{name}.lead_ohm models 2-wire leads; {name} "
                             f"has {sc['wires']} wires")
        out[name] = SensorModel(s.get("class"), s.get("class_sign", 1),
                                s.get("lead_ohm", 0.0), s.get("r_ref_dev_pct", 0.0),
                                s.get("noise_lsb", noise), float(sc["r0_ohm"]))
    if spec:
        raise ValueError(f"sensor_model: {sorted(spec)} are not configured sensors")
    return out
