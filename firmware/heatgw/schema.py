"""Validate a parsed JSON document against a schema kept as data (heatgw.config_schema).

    cfg, errors = validate(doc, SCHEMA)

`cfg` is a new object (never aliasing `doc` or the schema) with defaults filled in and ints
in float fields stored as float; values that failed are left out. `errors` is a list of
strings, each starting with the JSON path, e.g.
    "control.tick_ms: 5000 is above the maximum 1000 ms".
Unknown keys, wrong types, non-finite numbers, out-of-range and cross-field violations are
all errors. Runs unchanged on MicroPython and CPython with identical results: keys are
visited in sorted order (MicroPython dicts are unordered) and numbers are printed with %g.
Recursion follows the schema only (a few levels), never the document; it never raises for
any JSON value.
"""

_BAD = object()  # "no value": failed or absent
_OPS = {"lt": "below", "le": "at most", "gt": "above", "ge": "at least", "eq": "equal to"}


def ipv4(host):
    """True for a dotted-quad IPv4 address ("192.168.1.50"): the cross-checks' test of a
    host (heatgw.mbplan's TCP buses, heatgw.bmsschema's clients)."""
    parts = host.split(".") if type(host) is str else ()
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3 or not p.isdigit() or int(p) > 255:
            return False
    return True


def _short(s, n=40):
    return s if len(s) <= n else s[:n] + "..."


def _num(x):
    if type(x) is int:
        # CPython refuses to print ints of more than 4300 digits
        return "%d" % x if -10**18 < x < 10**18 else "a huge integer"
    return "%g" % x


def _desc(v):
    t = type(v)
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return _num(v)
    if t is str:
        return '"%s"' % _short(v)
    if t is list:
        return "a list"
    if t is dict:
        return "an object"
    return "a " + t.__name__


def _join(path, key):
    return key if not path else path + "." + key


def _unit(node):
    u = node.get("unit")
    return " " + u if u else ""


def _finite(x):
    # nan != nan; inf - inf is nan
    return x == x and x - x == 0


_EXPECT = {"int": "an integer", "float": "a number", "bool": "true or false",
           "str": "a string", "object": "an object"}


def _check(v, node, path, errs):
    """Return the checked value (with defaults filled) or _BAD after appending errors."""
    where = path or "config"
    t = node.get("type")
    if v is None:
        if node.get("null"):
            return None
        errs.append("%s: expected %s, got null" % (where, _EXPECT.get(t, t)))
        return _BAD
    vt = type(v)
    ok = ((t == "object" and vt is dict) or (t == "bool" and vt is bool)
          or (t == "int" and vt is int) or (t == "str" and vt is str)
          or (t == "float" and (vt is int or vt is float)))
    if not ok:
        errs.append("%s: expected %s, got %s" % (where, _EXPECT.get(t, t), _desc(v)))
        return _BAD
    if t == "object":
        return _object(v, node, path, errs)
    if vt is float and not _finite(v):
        errs.append("%s: %s is not a finite number" % (where, _desc(v)))
        return _BAD
    enum = node.get("enum")
    if enum is not None and v not in enum:
        errs.append("%s: %s is not allowed; one of %s"
                    % (where, _desc(v), ", ".join([_desc(e) for e in enum])))
        return _BAD
    if t == "str":
        lim = node.get("len")
        if lim and not lim[0] <= len(v) <= lim[1]:
            errs.append("%s: length %d is not %d ... %d" % (where, len(v), lim[0], lim[1]))
            return _BAD
        chars = node.get("chars")
        if chars:
            for c in v:
                if c not in chars:
                    errs.append("%s: character %s not allowed (%s)"
                                % (where, _desc(c), node.get("doc", "")))
                    return _BAD
        return v
    if t == "bool":
        return v
    lo = node.get("min")
    hi = node.get("max")
    if lo is not None and v < lo:
        errs.append("%s: %s is below the minimum %s%s" % (where, _num(v), _num(lo), _unit(node)))
        return _BAD
    if hi is not None and v > hi:
        errs.append("%s: %s is above the maximum %s%s" % (where, _num(v), _num(hi), _unit(node)))
        return _BAD
    st = node.get("step")
    if st is not None:
        k = v / st  # a whole number of steps, to single precision (the targets' floats)
        if abs(k - int(k + 0.5)) > 1e-6 * k:
            errs.append("%s: %s is not a whole multiple of %s%s"
                        % (where, _num(v), _num(st), _unit(node)))
            return _BAD
    if t == "float" and vt is int:
        try:
            v = float(v)
        except Exception:  # OverflowError on CPython for ints beyond double range
            errs.append("%s: %s is too large" % (where, _num(v)))
            return _BAD
    return v


def _items(v, node, path, errs):
    """An object whose member names are the installer's (buses, meters, registers): each
    member is checked against node["items"]; "len" / "chars" constrain the names."""
    out = {}
    most = node.get("max_items")
    if most is not None and len(v) > most:
        errs.append("%s: %d members, at most %d" % (path or "config", len(v), most))
        return _BAD
    lim = node.get("len")
    chars = node.get("chars") or ""
    for k in sorted(v, key=str):
        p = _join(path, _short(str(k)))
        if lim and not lim[0] <= len(k) <= lim[1]:
            errs.append("%s: a name of %d ... %d characters is needed" % (p, lim[0], lim[1]))
            continue
        bad = [c for c in k if chars and c not in chars]
        if bad:
            errs.append("%s: character %s not allowed in a name (letters, digits, - and _)"
                        % (p, _desc(bad[0])))
            continue
        r = _check(v[k], node["items"], p, errs)
        if r is not _BAD:
            out[k] = r
    return out


def _object(v, node, path, errs):
    if "items" in node:
        return _items(v, node, path, errs)
    keys = node.get("keys") or {}
    out = {}
    for k in sorted(v, key=str):
        if k not in keys:
            errs.append("%s: unknown key; expected one of %s"
                        % (_join(path, _short(str(k))), ", ".join(sorted(keys))))
    for k in sorted(keys):
        sub = keys[k]
        p = _join(path, k)
        if k in v:
            r = _check(v[k], sub, p, errs)
        elif sub.get("req"):
            errs.append("%s: required (%s)" % (p, sub.get("doc", "")))
            continue
        elif "default" in sub:
            r = _check(sub["default"], sub, p, errs)
        else:
            continue
        if r is not _BAD:
            out[k] = r
    for rule in node.get("rules") or ():
        if rule[0] == "req":
            _req(v, out, rule, path, errs)
        elif rule[0] == "one":
            _one(v, out, rule, path, errs)
        else:
            _rule(out, rule, path, errs)
    return out


def _req(doc, obj, rule, path, errs):
    """["req", key, base, why(, when)]: key is required when the object at base has a
    member (and, with when = [path, values], path holds one of values). The document,
    not the filled object, says whether key is present: a bad value is reported once, by
    its own check."""
    if not _get_obj(obj, rule[2]):
        return
    if len(rule) > 4 and _get(obj, rule[4][0], None) not in rule[4][1]:
        return
    d = doc
    for seg in rule[1].split("."):
        if type(d) is not dict:  # its own check said so
            return
        if seg not in d:
            errs.append("%s: required with %s (%s)"
                        % (_join(path, rule[1]), _join(path, rule[2]), rule[3]))
            return
        d = d[seg]


def _one(doc, obj, rule, path, errs):
    """["one", base, [key, ...], why(, when)]: the object at base, when present (not null,
    and with when = [path, values], path holds one of values), has exactly one of the keys
    (the document says which are present)."""
    if len(rule) > 4 and _get(obj, rule[4][0], None) not in rule[4][1]:
        return
    d = doc
    for seg in rule[1].split("."):
        if type(d) is not dict or seg not in d:
            return
        d = d[seg]
    if type(d) is not dict:
        return
    have = [k for k in rule[2] if k in d]
    if len(have) != 1:
        errs.append("%s: %s one of %s (%s)"
                    % (_join(path, rule[1]), "needs" if not have else "takes only",
                       ", ".join(rule[2]), rule[3]))


def _get(obj, path, bind):
    v = obj
    for seg in path.split("."):
        if seg == "*":
            seg = bind
        if type(v) is not dict or seg not in v:
            return _BAD
        v = v[seg]
    if type(v) is int or type(v) is float or type(v) is str:
        return v
    return _BAD


def _leaf(obj, term, bind):
    """(value, description) of a number, a path or a term; value _BAD when a path is
    absent."""
    if type(term) is list:
        v, d = _term(obj, term, bind)
        return v, "(" + d + ")"
    if type(term) is str:
        return _get(obj, term, bind), term.replace("*", str(bind))
    return term, _num(term)


def _term(obj, term, bind):
    if type(term) is not list:
        return _leaf(obj, term, bind)
    a, da = _leaf(obj, term[1], bind)
    b, db = _leaf(obj, term[2], bind)
    d = "%s %s %s" % (da, term[0], db)
    if a is _BAD or b is _BAD or type(a) is str or type(b) is str:
        return _BAD, d
    op = term[0]
    if op == "+":
        return a + b, d
    if op == "-":
        return a - b, d
    if op == "/":
        return (a / b, d) if b else (_BAD, d)  # nothing to compare with: the rule skips
    return a * b, d


def _paths(term):
    if type(term) is list:
        out = []
        for t in term[1:]:
            out += _paths(t)
        return out
    return [term] if type(term) is str else []


def _rule(obj, rule, path, errs):
    op, lhs, rhs, why = rule[0], rule[1], rule[2], rule[3]
    when = rule[4] if len(rule) > 4 else None
    binds = [None]
    for p in _paths(lhs) + _paths(rhs):
        if "*" in p:  # every key of the object at the wildcard
            base = _get_obj(obj, p[:p.index("*")].rstrip("."))
            binds = sorted(base) if base is not None else []
            break
    for bind in binds:
        if when is not None and _get(obj, when[0], bind) not in when[1]:
            continue
        a, da = _term(obj, lhs, bind)
        b, db = _term(obj, rhs, bind)
        if a is _BAD or b is _BAD or type(a) is str or type(b) is str:
            continue
        ok = ((op == "lt" and a < b) or (op == "le" and a <= b) or (op == "gt" and a > b)
              or (op == "ge" and a >= b) or (op == "eq" and a == b))
        if not ok:
            left = da + " = " + _num(a) if _paths(lhs) else _num(a)
            right = db + " = " + _num(b) if _paths(rhs) else _num(b)
            errs.append("%s%s must be %s %s (%s)"
                        % (path + ": " if path else "", left, _OPS.get(op, op), right, why))


def _get_obj(obj, path):
    v = obj
    if path:
        for seg in path.split("."):
            if type(v) is not dict or seg not in v:
                return None
            v = v[seg]
    return v if type(v) is dict else None


def validate(doc, schema):
    """(filled config, [error strings]) for a parsed JSON document; never raises."""
    errs = []
    out = _BAD
    try:
        out = _check(doc, schema, "", errs)
    except MemoryError:
        errs.append("config: out of memory while validating")
    except Exception as e:  # a schema bug must not take the caller down
        errs.append("config: validator failed: %r" % (e,))
    if out is _BAD:
        out = None
    return out, errs


def check(value, node, path):
    """(filled value, [errors]) for one value against its schema node (a key, a section),
    errors prefixed with path; the cross-field rules of the parents are not run (validate
    the whole document for those). Never raises."""
    errs = []
    out = _BAD
    try:
        out = _check(value, node, path, errs)
    except MemoryError:
        errs.append("%s: out of memory while validating" % path)
    except Exception as e:  # noqa: BLE001 - a schema bug must not take the caller down
        errs.append("%s: validator failed: %r" % (path, e))
    return (None if out is _BAD else out), errs
