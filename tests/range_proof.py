"""32-bit range proof for viper kernels: run the kernel's own source under CPython
with range-checked integers.

The 64-bit unix port cannot show a 32-bit overflow (its viper ints are 64 bits), so
this module takes the kernel source text, strips the viper decorator and the type
annotations (an AST transform, nothing else changes), and runs it with:

- every integer literal and module-level integer constant, and every argument, as a
  `Checked32`: an int whose every arithmetic / bitwise / shift result is checked to
  lie in [-2**31, 2**31 - 1] (RangeViolation otherwise), shift counts in 0..31, and
  division refused (viper truncates, Python floors: keep it out of kernels);
- every ptr32 argument as a `Ptr32`: reads out of bounds raise (a kernel bug would read
  foreign memory), reads and writes of negative words raise (a ptr32 load is
  sign-extended on a 32-bit target but zero-extended on the 64-bit unix port, so
  the kernel contract keeps every word >= 0), stored values are range-checked.

Python's int semantics equal 32-bit two's-complement semantics for every operation
whose result is in range, so a run without RangeViolation computes exactly what the
target computes. `STATS` counts the checked operations (so a test can show the proof
was actually exercised) and keeps the largest magnitude seen (the headroom).

Also checked statically: every integer constant in the module is < 2**30 in magnitude
(mpy-cross for xtensawin/armv6m rejects larger ones in viper code).
"""

import ast
from pathlib import Path

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
CONST_LIMIT = 1 << 30

KERNEL_PATH = Path(__file__).resolve().parent.parent / "firmware" / "heatgw" / "meterkernel.py"


class RangeViolation(ArithmeticError):
    pass


class _Stats:
    def __init__(self):
        self.reset()

    def reset(self):
        self.ops = 0
        self.loads = 0
        self.stores = 0
        self.max_abs = 0
        self.max_where = None


STATS = _Stats()


def _check(value, op, a, b):
    STATS.ops += 1
    if value < INT32_MIN or value > INT32_MAX:
        raise RangeViolation(f"{a} {op} {b} = {value} leaves the signed 32-bit range")
    m = -value if value < 0 else value
    if m > STATS.max_abs:
        STATS.max_abs = m
        STATS.max_where = f"{a} {op} {b}"
    return Checked32(value)


def _plain(x):
    if isinstance(x, bool):
        return int(x)
    if not isinstance(x, int):
        raise TypeError(f"kernel arithmetic on a non-integer: {x!r}")
    return int(x)


def _shift_count(b):
    b = _plain(b)
    if not 0 <= b <= 31:
        raise RangeViolation(f"shift by {b} (viper shifts a 32-bit word: 0..31)")
    return b


class Checked32(int):
    """An int whose every arithmetic result must fit a signed 32-bit word."""

    def __new__(cls, value):
        value = _plain(value)
        if value < INT32_MIN or value > INT32_MAX:
            raise RangeViolation(f"value {value} leaves the signed 32-bit range")
        return int.__new__(cls, value)

    def __add__(self, o):
        return _check(int(self) + _plain(o), "+", self, o)

    def __radd__(self, o):
        return _check(_plain(o) + int(self), "+", o, self)

    def __sub__(self, o):
        return _check(int(self) - _plain(o), "-", self, o)

    def __rsub__(self, o):
        return _check(_plain(o) - int(self), "-", o, self)

    def __mul__(self, o):
        return _check(int(self) * _plain(o), "*", self, o)

    def __rmul__(self, o):
        return _check(_plain(o) * int(self), "*", o, self)

    def __lshift__(self, o):
        return _check(int(self) << _shift_count(o), "<<", self, o)

    def __rlshift__(self, o):
        return _check(_plain(o) << _shift_count(self), "<<", o, self)

    def __rshift__(self, o):
        return _check(int(self) >> _shift_count(o), ">>", self, o)

    def __rrshift__(self, o):
        return _check(_plain(o) >> _shift_count(self), ">>", o, self)

    def __and__(self, o):
        return _check(int(self) & _plain(o), "&", self, o)

    __rand__ = __and__

    def __or__(self, o):
        return _check(int(self) | _plain(o), "|", self, o)

    __ror__ = __or__

    def __xor__(self, o):
        return _check(int(self) ^ _plain(o), "^", self, o)

    __rxor__ = __xor__

    def __neg__(self):
        return _check(-int(self), "neg", "", self)

    def __pos__(self):
        return self

    def __invert__(self):
        return _check(~int(self), "~", "", self)

    def __abs__(self):
        return _check(abs(int(self)), "abs", "", self)

    def _nodiv(self, o):
        raise RangeViolation("division in a kernel: viper truncates, Python floors")

    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __truediv__ = _nodiv
    __rtruediv__ = __pow__ = __rpow__ = __divmod__ = _nodiv

    def _cmp(op):  # noqa: N805 - helper building comparison methods
        f = getattr(int, op)

        def cmp(self, o):
            STATS.ops += 1
            _plain(o)
            return f(int(self), int(o))

        return cmp

    __lt__ = _cmp("__lt__")
    __le__ = _cmp("__le__")
    __gt__ = _cmp("__gt__")
    __ge__ = _cmp("__ge__")
    __eq__ = _cmp("__eq__")
    __ne__ = _cmp("__ne__")
    __hash__ = int.__hash__
    del _cmp


class Ptr32:
    """ptr32 over a Python list of ints, with the target's constraints checked."""

    def __init__(self, words, name="ptr32"):
        self.words = words
        self.name = name

    def _index(self, i):
        i = _plain(i)
        if not 0 <= i < len(self.words):
            raise RangeViolation(f"{self.name}[{i}] out of bounds (len {len(self.words)})")
        return i

    def __getitem__(self, i):
        v = self.words[self._index(i)]
        STATS.loads += 1
        if not 0 <= v <= INT32_MAX:
            raise RangeViolation(
                f"{self.name}[{i}] = {v}: a negative word reads differently on a 32-bit "
                "target (sign-extended) and the 64-bit host (zero-extended)")
        return Checked32(v)

    def __setitem__(self, i, v):
        v = _plain(v)
        STATS.stores += 1
        if not 0 <= v <= INT32_MAX:
            raise RangeViolation(f"store {v} into {self.name}[{i}]: not a word >= 0")
        self.words[self._index(i)] = v


class _Strip(ast.NodeTransformer):
    """Remove viper decorators and annotations; wrap int literals in Checked32."""

    def visit_FunctionDef(self, node):
        node.decorator_list = []
        node.returns = None
        for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
            a.annotation = None
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node):
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)

    def visit_Import(self, node):
        names = [a for a in node.names if a.name != "micropython"]
        if not names:
            return None
        node.names = names
        return node

    def visit_ImportFrom(self, node):
        if node.module == "micropython":
            return None
        return node

    def visit_Constant(self, node):
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            call = ast.Call(func=ast.Name("_C32", ast.Load()), args=[node], keywords=[])
            return ast.copy_location(call, node)
        return node


def int_constants(source):
    """Every integer literal in the source (for the mpy-cross 2**30 rule)."""
    return [n.value for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, int)
            and not isinstance(n.value, bool)]


def load(source=None, mutate=()):
    """Load the kernel source under range checking; returns its namespace (a dict).

    mutate: (old, new) string replacements applied first; each must match.
    """
    src = KERNEL_PATH.read_text() if source is None else source
    for old, new in mutate:
        if old not in src:
            raise ValueError(f"mutation target not in the kernel source: {old!r}")
        src = src.replace(old, new)
    for c in int_constants(src):
        if not -CONST_LIMIT <= c < CONST_LIMIT:
            raise RangeViolation(f"constant {c} >= 2**30: mpy-cross rejects it in viper code")
    tree = ast.fix_missing_locations(_Strip().visit(ast.parse(src)))
    ns = {"_C32": Checked32, "const": lambda x: x, "__name__": "meterkernel_checked"}
    exec(compile(tree, str(KERNEL_PATH), "exec"), ns)  # noqa: S102 - our own source
    for k, v in list(ns.items()):
        if isinstance(v, int) and not isinstance(v, bool) and not k.startswith("__"):
            ns[k] = Checked32(v)
    return ns


def integrate(ns, samples, n, table, state):
    """Run the checked kernel: lists in, `state` (a list) updated in place."""
    return int(ns["integrate"](Ptr32(samples, "samples"), Checked32(n),
                               Ptr32(table, "table"), Ptr32(state, "state")))
