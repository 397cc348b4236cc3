"""The integrity seal of the node's JSON files (config.json, its last good copy,
secrets.json): written by the node and by provisioning, checked when the node reads them.

    data = seal(text)     # text: a JSON object's text (str or bytes) -> the file's bytes
    check(raw)            # True: sealed and intact; False: no seal; else why not (str)

A sealed file's first line is

    {"sha256": "<64 lowercase hex digits>",

followed by the object's other members, as written: the digits are the SHA-256 of every
byte after that line. The file stays valid JSON (the seal is one more member, removed by
the reader) and readable in an editor. A hash over the exact bytes, not over re-serialised
values: float formatting differs between CPython and single-precision ports, bytes do not.
A file without the line (edited by hand) is no sealed file: its readers accept it with a
warning. Runs unchanged on MicroPython and CPython (hashlib.sha256 on both).
"""

HEAD = b'{"sha256": "'
LINE = 79  # bytes of the seal line: HEAD, 64 hex digits, '",\n'


def _hex_sha256(data):
    import binascii
    import hashlib

    return binascii.hexlify(hashlib.sha256(data).digest())


def seal(text):
    """The sealed file (bytes) of text: the seal line, then text after its "{" (and after a
    newline right after it)."""
    if type(text) is str:
        text = text.encode()
    i = text.find(b"{") + 1
    if text[i:i + 1] == b"\n":
        i += 1
    rest = text[i:]
    return HEAD + _hex_sha256(rest) + b'",\n' + rest


def check(raw):
    """True: raw carries its seal and matches it; False: no seal (a file edited by hand);
    else the error (a string): the seal is damaged or does not match."""
    if raw[:9] != HEAD[:9]:
        return False
    if len(raw) < LINE or raw[:12] != HEAD or raw[LINE - 3:LINE] != b'",\n':
        return ("integrity check failed: its first line, the seal {\"sha256\": ...}, is "
                "damaged")
    if _hex_sha256(memoryview(raw)[LINE:]) != raw[12:LINE - 3]:
        return ("integrity check failed: the file changed after it was written (damaged, "
                "or edited without deleting its first line, the seal)")
    return True
