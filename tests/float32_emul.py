"""IEEE single-precision emulation of firmware float code under CPython (numpy float32).

ESP32 and RP2040 run MicroPython with single-precision floats; the host's unix port uses
doubles and hides every rounding problem. `load(path)` executes a module's own source
with an AST transform (nothing else changes) so that its float arithmetic happens in
float32, one rounding per operation as on the targets' FPU / soft-float:

- every float literal becomes `numpy.float32(literal)` (correctly rounded, as a target's
  parser should: MicroPython's may be an ulp off, which this does not model);
- every true division `a / b` becomes float32(a) / float32(b) (MicroPython converts
  int operands to the port's float before dividing);
- `math.sqrt` is float32 sqrt (correctly rounded, like sqrtf);
- `from micropython import const` is replaced by an identity `const`.

Arguments passed in should be float32 (`F(x)`) or ints. numpy >= 2 keeps Python ints and
floats "weak", so `float32 op int` stays float32; `check_f32` asserts a result really
is float32, so the emulation cannot silently fall back to double.
"""

import ast
import math
import types

import numpy as np

F = np.float32


def _div(a, b):
    return F(a) / F(b)


def _sqrt(x):
    return np.sqrt(F(x))


class _F32Transform(ast.NodeTransformer):
    def visit_Constant(self, node):
        if type(node.value) is float:
            call = ast.Call(func=ast.Name("_F32", ast.Load()), args=[node], keywords=[])
            return ast.copy_location(call, node)
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Div):
            call = ast.Call(func=ast.Name("_DIV32", ast.Load()),
                            args=[node.left, node.right], keywords=[])
            return ast.copy_location(call, node)
        return node

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Div):
            raise NotImplementedError("a /= b: not emulated")
        return node

    def visit_ImportFrom(self, node):
        if node.module == "micropython":  # const() is in the namespace; a try: body stays
            return ast.copy_location(ast.Pass(), node)
        return node


_MATH32 = types.SimpleNamespace(sqrt=_sqrt, pi=F(math.pi), e=F(math.e))


def load(path, name=None):
    """Execute the module at `path` in float32; returns its namespace (a dict)."""
    src = path.read_text()
    tree = ast.fix_missing_locations(_F32Transform().visit(ast.parse(src)))
    ns = {"_F32": F, "_DIV32": _div, "const": lambda x: x,
          "__name__": name or path.stem + "_f32"}
    code = compile(tree, str(path), "exec")
    exec(code, ns)  # noqa: S102 - our own firmware source
    if "math" in ns:
        ns["math"] = _MATH32
    return ns


def check_f32(x):
    if type(x) is not F:
        raise TypeError(f"emulation leaked a {type(x).__name__}: {x!r}")
    return x


def ulp(x):
    """One unit in the last place of float32 x."""
    x = abs(F(x))
    return float(np.nextafter(x, F(np.inf)) - x)
