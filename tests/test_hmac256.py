"""firmware/heatgw/hmac256.py: HMAC-SHA256 against RFC 4231 and CPython's hmac.

The RFC 4231 test cases 1-7 (SHA-256 rows; case 5 is truncated to 128 bits) run in
CPython in-process and in the real micropython binary; random keys and messages of every
length around the block size are checked against CPython's hmac in both.
"""

import hashlib
import hmac
import json
import random
import sys

from host_tools.paths import FIRMWARE

sys.path.insert(0, str(FIRMWARE))

from heatgw import hmac256  # noqa: E402

_LONG_KEY = b"\xaa" * 131
RFC4231 = [  # (key, data, HMAC-SHA256 hex; case 5: its 128-bit truncation)
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (_LONG_KEY, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (_LONG_KEY, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def _random_cases(n=60, seed=4231):
    rng = random.Random(seed)
    lengths = [0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200]
    out = []
    for i in range(n):
        kl = lengths[i % len(lengths)]
        dl = lengths[(i * 7) % len(lengths)] + rng.randrange(3)
        out.append((rng.randbytes(kl), rng.randbytes(dl)))
    return out


def test_rfc4231_vectors_in_cpython():
    for key, data, want in RFC4231:
        got = hmac256.Key(key).mac(data).hex()
        assert got[:len(want)] == want
        assert hmac256.hmac_sha256(key, data).hex()[:len(want)] == want


def test_agrees_with_cpython_hmac_on_random_keys_and_lengths():
    for key, data in _random_cases():
        want = hmac.new(key, data, hashlib.sha256).digest()
        k = hmac256.Key(key)
        assert k.mac(data) == want
        assert k.mac(memoryview(data)) == want  # the same key object, reused
        assert k.mac(bytearray(data)) == want


def test_equal_is_exact():
    a = bytes(range(32))
    assert hmac256.equal(a, bytes(a))
    assert not hmac256.equal(a, a[:31])
    for i in range(32):
        b = bytearray(a)
        b[i] ^= 1 << (i % 8)
        assert not hmac256.equal(a, bytes(b))


def test_key_repr_hides_the_key():
    k = hmac256.Key(b"\x0b" * 20)
    assert "0b" not in repr(k) and "\\x0b" not in str(k)


def test_micropython_gives_the_rfc_values_and_cpythons(mp):
    cases = [(k.hex(), d.hex()) for k, d, _ in RFC4231] + [
        (k.hex(), d.hex()) for k, d in _random_cases()]
    src = f"""
import json
from binascii import unhexlify
from heatgw import hmac256
out = []
for kh, dh in {cases!r}:
    k = unhexlify(kh)
    d = unhexlify(dh)
    key = hmac256.Key(k)
    a = key.mac(d)
    b = key.mac(memoryview(d))
    out.append([a.hex(), a == b, hmac256.equal(a, b), hmac256.equal(a, b[:31])])
print(json.dumps(out))
"""
    got = mp.run_json(src)[0]
    for (_k, _d, want), row in zip(RFC4231, got, strict=False):
        assert row[0][:len(want)] == want
    for (key, data), row in zip(_random_cases(), got[len(RFC4231):], strict=True):
        assert row[0] == hmac.new(key, data, hashlib.sha256).hexdigest()
    assert all(r[1] and r[2] and not r[3] for r in got)
    assert json.dumps(got)  # plain JSON came back
