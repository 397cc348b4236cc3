"""The harness's end of the lockstep link: the lines it sends and how it reads the node's.

The opcodes are boards/host/linkproto.py, the table the node (boards/host/link.py) uses;
it documents every line. It is loaded here from its file: boards/host/ is the node's
module path, not the harness's.
"""

import importlib.util
import json

from host_tools.paths import BOARDS

_spec = importlib.util.spec_from_file_location("linkproto", BOARDS / "host" / "linkproto.py")
proto = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(proto)

NONE = proto.NONE
# node -> harness, as the first character of a line
HELLO = chr(proto.HELLO)
IDLE = chr(proto.IDLE)
PIN = chr(proto.PIN)
WDT_START = chr(proto.WDT_START)
WDT_FEED = chr(proto.WDT_FEED)
RECORD = chr(proto.RECORD)
CUT_REACHED = chr(proto.CUT_REACHED)
DEAD_MAN = chr(proto.DEAD_MAN)


def _line(code, *fields):
    return " ".join((chr(code), *map(str, fields))) + "\n"


# -- harness -> node -------------------------------------------------------------------

def boot(vt0, tick0, safe_boot):
    return _line(proto.BOOT, vt0, tick0, 1 if safe_boot else 0)


def advance(vt, horizon, utc_s=None):
    """Time is now vt; nothing served changes before horizon."""
    if utc_s is None:
        return _line(proto.TIME, vt, horizon)
    return _line(proto.TIME, vt, horizon, utc_s)


def rtd_ohm(name, ohm_text):
    return _line(proto.RTD_OHM, name, ohm_text)


def rtd_fault(name, fault):
    return _line(proto.RTD_FAULT, name, fault)


def chip(name, r_ref_ohm_text, noise_lsb):
    """The converter chip `name`: its fitted reference resistor and conversion noise."""
    return _line(proto.CHIP, name, r_ref_ohm_text, noise_lsb)


def technician(args):
    """A technician's calibration step (boards/host/technician.py): call and arguments."""
    return _line(proto.TECHNICIAN, *args)


def input_level(name, level):
    return _line(proto.INPUT, name, level)


def pulses(level, low_ms, edges):
    """The flow input's level now (0/1 at boot; "-": as the node has it), then the pulses
    due before the horizon: low from each edge for low_ms."""
    return _line(proto.PULSES, level, low_ms, *edges)


def cut_at(flash_op, torn_bytes):
    return _line(proto.CUT_AT, flash_op, torn_bytes)


def flash_error(ops):
    """The next `ops` flash programs/erases fail with EIO (0: none)."""
    return _line(proto.FLASH_ERROR, ops)


HANG = _line(proto.HANG)
BUS_ERROR = _line(proto.BUS_ERROR)
WDT_ERROR = _line(proto.WDT_ERROR)
STOP = _line(proto.STOP)
END = _line(proto.END)


# -- node -> harness -------------------------------------------------------------------

def parse(line):
    """(opcode character, fields) of a node line; vt fields as ints, records decoded.

    P: (relay, level, vt)  F: (vt,)  W: (timeout_ms, vt)  O: (kind, vt, record)
    X: (vt, info)  I: (deadline_vt or None,)  H: (pid,)  D: (hold_ms, vt)
    """
    op = line[:1]
    if op == PIN:
        _, name, level, vt = line.split()
        return op, (name, int(level), int(vt))
    if op == WDT_FEED:
        return op, (int(line.split()[1]),)
    if op == WDT_START:
        _, timeout, vt = line.split()
        return op, (int(timeout), int(vt))
    if op == RECORD:
        _, kind, vt, payload = line.split(" ", 3)
        return op, (kind, int(vt), json.loads(payload))
    if op == CUT_REACHED:
        _, vt, payload = line.split(" ", 2)
        return op, (int(vt), json.loads(payload))
    if op == IDLE:
        arg = line.split()[1]
        return op, (None if arg == NONE else int(arg),)
    if op == DEAD_MAN:
        _, hold, vt = line.split()
        return op, (int(hold), int(vt))
    if op == HELLO:
        return op, tuple(line.split()[1:])
    raise ValueError(f"node sent {line!r}")
