"""Atomic persistence in two slots: a power cut during a save never loses the last one.

SlotStore(path_a, path_b, max_payload=8192)
    load() -> (seq, payload_bytes), or (0, None) when neither slot holds a valid record.
    save(payload_bytes) -> seq

Record (little-endian):  b"HGW\\x01" | u32 seq | u32 length | payload | u32 crc32
where the CRC covers every byte before it. save() writes the slot that does NOT hold the
newest valid record, with seq + 1, then closes the file; only then is the save complete.
Until then the other slot still holds the previous record, so whatever a cut leaves
behind (nothing, a torn record, a short file, stale bytes) load() finds one good slot.
A slot that is missing, short, torn, corrupt, foreign or longer than its record is
ignored; load() never raises for the content of a slot.

Sequence numbers are u32, 1 … 2**32-1 (0 means "nothing stored") and are compared with
serial-number arithmetic (RFC 1982), so the newer of two slots is found across the wrap
after 2**32-1 (136 years at one save per second). Two slots only ever differ by one.

On a littlefs volume a file is already replaced atomically on close; the two slots make
the same guarantee on any VFS (VfsPosix on the host, FAT) and also survive a slot whose
data a flash fault damaged after the save.

binascii.crc32 is used when the build has it; otherwise a table-less CRC-32 (same
polynomial, same results, 8 shifts a byte) keeps 1 KB of RAM free for a table we don't
need: a save every few minutes spends a few ms on it.

Counters: saves, bytes_written (record bytes handed to the filesystem), load_rejects
(slots found invalid by load()).
"""

import struct

try:
    from binascii import crc32 as _crc32_lib
except ImportError:  # ESP32/RP2040 builds may leave binascii.crc32 out
    _crc32_lib = None

MAGIC = b"HGW\x01"
HEADER_LEN = 12  # magic + seq + length
CRC_LEN = 4
SEQ_MOD = 1 << 32
_SEQ_HALF = 1 << 31


def crc32_sw(data, crc=0):
    """CRC-32 (IEEE 802.3, reflected 0xEDB88320), same value and chaining as binascii.crc32."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xEDB88320
            else:
                crc >>= 1
    return crc ^ 0xFFFFFFFF


if _crc32_lib is not None:
    def crc32(data, crc=0):
        return _crc32_lib(data, crc) & 0xFFFFFFFF
else:
    crc32 = crc32_sw


def seq_newer(a, b):
    """True when u32 sequence number a is newer than b (serial-number arithmetic)."""
    d = (a - b) % SEQ_MOD
    return 0 < d < _SEQ_HALF


def seq_next(seq):
    seq = (seq + 1) % SEQ_MOD
    return seq if seq else 1  # 0 stays "nothing stored"


class SlotStore:
    def __init__(self, path_a, path_b, max_payload=8192):
        if path_a == path_b:
            raise ValueError("slots must be different files")
        self.paths = (path_a, path_b)
        self.max_payload = max_payload
        self.saves = 0
        self.bytes_written = 0
        self.load_rejects = 0
        self._seq = 0
        self._newest = None  # index of the slot holding the newest valid record
        self._scanned = False

    def _read_slot(self, path):
        # -> (seq, payload) or None. Reads the header first so a foreign or damaged file
        # never makes us allocate more than max_payload.
        try:
            f = open(path, "rb")
        except OSError:
            return None
        try:
            head = f.read(HEADER_LEN)
            if not head or len(head) != HEADER_LEN or head[:4] != MAGIC:
                return None
            seq, length = struct.unpack("<II", head[4:])
            if seq == 0 or length > self.max_payload:
                return None
            payload = f.read(length) if length else b""
            tail = f.read(CRC_LEN)
            if len(payload) != length or not tail or len(tail) != CRC_LEN:
                return None
            if f.read(1):
                return None  # trailing bytes: not a file this store wrote
            if crc32(payload, crc32(head)) != struct.unpack("<I", tail)[0]:
                return None
            return seq, payload
        except (OSError, ValueError, TypeError):  # unreadable = invalid slot
            return None
        finally:
            f.close()

    def load(self):
        best = None
        newest = None
        for i in (0, 1):
            rec = self._read_slot(self.paths[i])
            if rec is None:
                self.load_rejects += 1
                continue
            if best is None or seq_newer(rec[0], best[0]):
                best = rec
                newest = i
        self._scanned = True
        self._newest = newest
        if best is None:
            self._seq = 0
            return 0, None
        self._seq = best[0]
        return best

    def next_seq(self):
        """The sequence number the next save() will write."""
        if not self._scanned:
            self.load()
        return seq_next(self._seq)

    def save(self, payload):
        """Write a record; `payload` is bytes or a list of bytes parts (written one after
        the other, never joined: a big record needs no second copy in RAM)."""
        parts = payload if isinstance(payload, (list, tuple)) else (payload,)
        n = 0
        for part in parts:
            n += len(part)
        if n > self.max_payload:
            raise ValueError("payload %d > max_payload %d" % (n, self.max_payload))
        if not self._scanned:
            self.load()  # which slot is newest decides which one we may overwrite
        target = 1 if self._newest == 0 else 0
        seq = seq_next(self._seq)
        head = struct.pack("<4sII", MAGIC, seq, n)
        crc = crc32(head)
        for part in parts:
            crc = crc32(part, crc)
        tail = struct.pack("<I", crc)
        f = open(self.paths[target], "wb")
        try:
            f.write(head)
            for part in parts:
                f.write(part)
            f.write(tail)
        finally:
            f.close()
        # Complete: from here on the target holds the newest record.
        self._newest = target
        self._seq = seq
        self.saves += 1
        self.bytes_written += HEADER_LEN + n + CRC_LEN
        return seq
