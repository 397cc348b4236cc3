"""HMAC-SHA256 (RFC 2104) on hashlib.sha256: the ports have no `hmac` module.

    k = Key(key_bytes)          # pads computed once per key
    tag = k.mac(data)           # 32 bytes; data: bytes, bytearray or memoryview
    equal(tag, other)           # constant-time comparison

One implementation everywhere (CPython's hmac is used only by the tests, as the reference).
A MAC costs two sha256 objects and their two 32-byte digests: hashlib.sha256 on
MicroPython has no copy(), so the padded key is hashed again each time (one block each).
"""

from hashlib import sha256

BLOCK = 64  # SHA-256 block size, bytes
SIZE = 32  # digest size, bytes


class Key:
    def __init__(self, key):
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError("hmac key must be bytes")
        if len(key) > BLOCK:
            key = sha256(key).digest()  # RFC 2104: a long key is hashed first
        ipad = bytearray(BLOCK)
        opad = bytearray(BLOCK)
        for i in range(BLOCK):
            b = key[i] if i < len(key) else 0
            ipad[i] = b ^ 0x36
            opad[i] = b ^ 0x5C
        self._ipad = bytes(ipad)
        self._opad = bytes(opad)

    def mac(self, data):
        h = sha256(self._ipad)
        h.update(data)
        h2 = sha256(self._opad)
        h2.update(h.digest())
        return h2.digest()

    def __repr__(self):
        return "<hmac key>"  # never the key material

    __str__ = __repr__


def hmac_sha256(key, data):
    return Key(key).mac(data)


def equal(a, b):
    """a == b in time that depends only on the lengths (no early exit on a mismatch)."""
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0
