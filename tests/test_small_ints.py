"""Integer constants in firmware/, lib/ and the real boards fit a 31-bit small int, or are allowed.

On ESP32 and RP2040 a small int is 31 bits: -2**30 <= n < 2**30. Beyond it an int is a
heap object, and every sum with it allocates too: `INVALID = -0x40000000` (its literal is
2**30 before the minus) made `INVALID + K_OFFSET_MC` raise MemoryError under heap_lock in
the sampler on a 32-bit port, while the 64-bit host keeps it small and passes. This
check needs no 32-bit binary: it parses the source with CPython's `ast` and evaluates
every constant expression (literals, `const()` values, unary minus, shifts and other
arithmetic on constants, module-level names bound to constants), reporting the first
expression in each where the value leaves the small-int range.

A long int that is needed (a capacity bound, a CRC-32 mask) is listed in ALLOWED with the
reason it never sits on an allocation-free path (HeatMeter.add and the kernel, the
control tick).
"""

import ast
import operator

from host_tools.paths import BOARDS, FIRMWARE, LIB, REPO

SMALL_MIN = -(1 << 30)
SMALL_MAX = (1 << 30) - 1

# (file, expression source) -> why this long int is fine
ALLOWED = {
    ("boards/pico_w/board.py", "0x40058000"):
        "RP2040 WATCHDOG CTRL register address, read once by boot.py after a soft reset",
    ("firmware/heatgw/meter.py", "1 << 90"):
        "energy capacity bound (nJ), compared only in HeatMeter.restore()",
    ("firmware/heatgw/meter.py", "1 << 60"):
        "volume/time capacity bound, compared only in HeatMeter.restore()",
    ("firmware/heatgw/meter.py", "3_600_000_000_000"):
        "nJ per Wh: divides a (long) total when energy_wh is read, never in add()",
    ("firmware/heatgw/metertable.py", "1 << 41"):
        "the kernel's table contract, checked once when a HeatMeter is made",
    ("firmware/heatgw/schema.py", "10**18"):
        "formatting a huge int in a config error message (validation at load only)",
    ("firmware/heatgw/store.py", "1 << 32"):
        "u32 sequence arithmetic when a state slot is saved or loaded (flash I/O)",
    ("firmware/heatgw/store.py", "1 << 31"):
        "u32 sequence comparison when a state slot is loaded",
    ("firmware/heatgw/store.py", "0xFFFFFFFF"):
        "CRC-32 mask, computed when a record or event is written or read (flash I/O)",
    ("firmware/heatgw/store.py", "0xEDB88320"):
        "CRC-32 polynomial of the software fallback (flash I/O only)",
}

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.LShift: operator.lshift, ast.RShift: operator.rshift,
           ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor,
           ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNOPS = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}


class _NotConst(Exception):
    pass


def _value(node, env):
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _UNOPS[type(node.op)](_value(node.operand, env))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _value(node.left, env), _value(node.right, env)
        if isinstance(node.op, ast.Pow) and not 0 <= right <= 256:
            raise _NotConst
        if isinstance(node.op, ast.LShift) and not 0 <= right <= 1024:
            raise _NotConst
        return _BINOPS[type(node.op)](left, right)
    if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "const"
            and len(node.args) == 1):
        return _value(node.args[0], env)
    raise _NotConst


def _small(v):
    return SMALL_MIN <= v <= SMALL_MAX


def long_int_sites(source):
    """[(line, expression source, value)] where a constant expression first leaves the
    31-bit small-int range (its constant operands, if any, are all small)."""
    tree = ast.parse(source)
    env = {}
    for node in tree.body:  # module-level names bound to constants, in order
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            try:
                env[node.targets[0].id] = _value(node.value, env)
            except (_NotConst, ArithmeticError, ValueError):
                pass
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            continue  # a use of a name: its definition is reported
        try:
            v = _value(node, env)
        except (_NotConst, ArithmeticError, ValueError):
            continue
        if _small(v):
            continue
        children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]
        child_values = []
        for c in children:
            try:
                child_values.append(_value(c, env))
            except (_NotConst, ArithmeticError, ValueError):
                pass
        if all(_small(c) for c in child_values):
            sites.append((node.lineno, ast.get_source_segment(source, node), v))
    return sites


def firmware_sources():
    # Every real board: a folder with a manifest.py that is not the host board.
    boards = [m.parent for m in sorted(BOARDS.glob("*/manifest.py")) if m.parent.name != "host"]
    for root in (FIRMWARE, LIB, *boards):
        yield from sorted(root.rglob("*.py"))


def test_checker_finds_the_long_int_forms():
    src = """
from micropython import const
INVALID = -0x40000000
_BIG = const(1 << 30)
_OK = const(0x3FFFFFFF)
_MIN = -0x3FFFFFFF - 1
_TOP = _OK + 1
_N = -(1 << 29) * 2
x = y + 123
"""
    found = {seg: v for _, seg, v in long_int_sites(src)}
    assert found == {"0x40000000": 1 << 30, "1 << 30": 1 << 30, "_OK + 1": 1 << 30}


def test_every_integer_constant_fits_a_31_bit_small_int_or_is_allowed():
    found = {}
    for path in firmware_sources():
        rel = path.relative_to(REPO).as_posix()
        for line, seg, value in long_int_sites(path.read_text()):
            found.setdefault((rel, seg), []).append(f"{rel}:{line}: {seg} = {value}")
    unexpected = [where for key, wheres in found.items() if key not in ALLOWED
                  for where in wheres]
    assert not unexpected, (
        "long ints (not 31-bit small ints on ESP32/RP2040; every sum with one allocates): "
        + "; ".join(unexpected) + ". Keep constants in -2**30..2**30-1, or add them to "
        "ALLOWED with the reason they never sit on an allocation-free path.")
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"ALLOWED entries no longer in the source: {stale}"
