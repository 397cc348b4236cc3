"""Store-and-forward: a bounded ring of fixed-size binary records on littlefs.

    q = RecordQueue("/data/q", capacity=9000)
    seq = q.append(KIND_TELEMETRY, {"boot": 7, "up_ms": 12345, "utc": None,
                                   "totals": meter.totals(), "supply_mc": 61250, ...})
    s = q.next_unsent(0)          # oldest unacked seq still on flash (0: none)
    rec = q.get(s)                # decoded dict, or None: gone (overwritten or damaged)
    q.mark_acked(s)               # after its PUBACK
    q.last_totals()               # (seq, totals) of the newest telemetry record, or None

Also: peek_unsent() (= next_unsent(0)), is_acked(seq), unsent(), len(q), oldest(),
decode(buf), save_acks() and close()
(persist the ack mark now), capacity_for(dir) / default_capacity(fs_bytes), counters
appends, dropped, last_drop, ack_saves, errors. next_unsent(after) walks the backlog in
seq order from any point and mark_acked() takes acks in any order, so a sender may
interleave live records with a draining backlog or send newest first: the queue does
not choose. On restore, the newer of the state record's totals and last_totals() is the
one with the larger time_ms (it counts every sample's time, so it only grows).

Records (little-endian), two formats, each with a CRC-32 (heatgw.store's) over all but
its last 4 bytes:
- version 0x52, REC_LEN = 112 bytes, CRC over the first 108 (every node):
    header 24: u8 version | u8 kind | u16 boot | u32 seq | u32 low | u32 up_ms low 30 bits
               | u16 up_ms >> 30 | u16 code | u32 utc (s since 2020-01-01, 0 = unknown)
    telemetry 84: energy_nj 3 x u32 limbs of 2**30 | volume_ul 2 x u32 | time_ms, error_ms,
               low_dt_ms, negative_dt_ms each u32 low 30 bits + u16 high | supply_mc,
               return_mc, sink_return_mc, coolant_mc i32 | flow_ml_h i32 | power_w i32
               | u8 relay | u8 reason | u16 active | u16 latched | u16 heap_free / 16
               | at 100, the analogue inputs (heatgw.analog): valve_q u16, ain_q 3 x u16
               (the inputs by name), each the reading at the pin in 64 uV steps, 0xFFFF
               none; the payload converts it as the node converts a live one
    event, alarm 84: 4 x i32 args | 60 bytes of UTF-8 text (zero padded) | 8 zero bytes
- version 0x53, REC_LEN + EXT_LEN = 160 bytes, CRC over the first 156 (a queue made with
  ext=True: the node with a `recovery` section, heatgw.recovery): the same 108 bytes, then
  for telemetry the extension (48 B: heatgw.recovery's X_* values, i32/u32 words: compute
  power W, the compute energy and the ratio's heat in mWh as 2 limbs each, the interval's
  and hour's ratio in ppm, the heat meter's and our heat over the compared spans in mWh as
  2 limbs each, flags; 3 bytes pad), zeros for events and alarms.
Each segment file holds one format (a change starts a new segment) and the queue finds
each segment's from its first valid record, so it reads both: a node's backlog survives
switching the recovery feature on or off. Older formats an earlier firmware left on flash
(0x51: 104 bytes, before the analogue inputs; 0x52 of 152 bytes: the recovery extension
of a development build before the two were unified) are not read: the first append after
the upgrade drops those not yet acknowledged with a drop record, and seq goes on from the
newest of them (no seq is used twice).
`code` is an index into EVENT_CODES / ALARM_CODES (telemetry: 0; code_of, name_of). A
value that is not valid is stored as INVALID (i32), None on reading. `low` is the ack
low-water mark when the record was written: every seq <= low was acknowledged or its drop
recorded.

Files: `segments` files seg00.. in `directory`, each appended record by record, and
`ack`. Why segments and not one file of fixed slots: littlefs is copy-on-write, a write
in the middle of a file rewrites the rest of the file, so a ring of slots in one file
would copy up to the whole queue per record. Appending costs littlefs one block erase and
a copy of the file's partial last block (half a block on average) whatever the file's
size; recycling a segment is a truncate. Each append is open/write/close: littlefs commits
it atomically at close, so a power cut leaves the record whole or absent, never torn, and
`seq` is the position on flash (segment's first seq + slot): a record lost before storage
leaves no gap and no seq is reused. Capacity is `capacity` records at least, up to
capacity * segments / (segments - 1) (the segment being refilled holds the rest).

Ack persistence: every record carries `low`, and the `ack` file (12 bytes, inline in
littlefs's metadata: no block erase) is rewritten when `low` advanced by `ack_save_every`
since it was last saved, or by save_acks(). After a crash the newest of the two is the
mark: acks after it are lost and their records sent again (at least once; upstream dedups
by seq). Acks out of order (a live record acked while a backlog drains) are kept in
_RANGES ranges above `low`, in RAM only.

Overflow: refilling the oldest segment drops its unacked records; a drop record (kind
event, code "queue_drop", args first, last, count) is written in the same file commit, so
the loss is on flash with the truncation or neither happened. Counted in `dropped` and
`last_drop` = (first, last) for the caller.

RAM: a few ints per segment and two record buffers, whatever the number of records; an
append allocates a little garbage (struct args, file object), never more with length.
"""

try:
    from micropython import const
except ImportError:  # CPython (the tests): const() is the identity on ints
    const = int

import struct

# the relay decision's reason codes and the table helpers (heatgw.reasons: the BMS's
# registers use them without the queue), re-exported
from heatgw.reasons import REASONS, code_of, name_of, reason_bits, reason_code  # noqa: F401
from heatgw.store import crc32

REC_LEN = const(112)
_BODY = const(108)  # REC_LEN - 4: the CRC's offset
_VERSION = const(0x52)
EXT_LEN = const(48)  # the telemetry extension of a version-0x53 record (heatgw.recovery)
_VERSION_EXT = const(0x53)
_EXT = "<iIIIIiiIIIIB3x"  # heatgw.recovery.X_*: 12 values, 48 bytes
# Formats of earlier firmware (module doc): version byte, record length; not read
_OLD = ((0x51, 104), (0x52, 152))
KIND_TELEMETRY = 1
KIND_EVENT = 2
KIND_ALARM = 3
INVALID = -0x20000000  # i32 marker of "no valid value" (heatgw.meter.INVALID)
# Unix seconds of 2020-01-01 (1577836800) in two halves: each a 31-bit small int, so the
# constant itself is no long int on the targets (the sum with a 1970-based utc is one).
_EPOCH_HALF = const(788918400)  # u32 utc since 2020 lasts until 2156
_M30 = const(0x3FFFFFFF)
_HDR = "<BBHIIIHHI"  # 24 bytes
_TEL = "<IIIIIIHIHIHIHiiiiiiBBHHH"  # 76 bytes
_EVT = "<iiii60s"  # 76 bytes
_AIN = "<HHHH"  # 8 bytes at 100: the valve's and 3 analogue inputs' readings (64 uV steps)
_NO_Q = const(0xFFFF)
_AIN_AT = const(100)
_TEXT_LEN = const(60)
_RANGES = const(4)  # acked ranges above low kept in RAM
TEMPS = ("supply_mc", "return_mc", "sink_return_mc", "coolant_mc")
TIMES = ("time_ms", "error_ms", "low_dt_ms", "negative_dt_ms")
# Codes are indexes: append new names at the end, never reorder (records on flash). Each
# table is one string of space-separated names (code_of() and name_of() look them up), not
# a tuple of str objects.
EVENT_CODES = ("other boot state trip clear latch reset crash task task_failing supervisor "
               "config request restored save_failed queue_drop net_up net_down mqtt_up "
               "mqtt_down cmd cmd_rejected calibration")
ALARM_CODES = "other save_failed task_failing trip_latched sensor_fault queue_drop fault"
_DROP = code_of(EVENT_CODES, "queue_drop")


def default_capacity(fs_bytes, share_pct=50, segments=16, rec_len=REC_LEN):
    """Records the queue holds by default on a file system of fs_bytes: share_pct of it
    for the ring's slots (littlefs needs free blocks to copy on write, the rest of the
    node's files live there too), minus the segment being refilled. rec_len: REC_LEN, or
    REC_LEN + EXT_LEN for a queue with the extension."""
    slots = fs_bytes // 100 * share_pct // rec_len
    return slots * (segments - 1) // segments


def capacity_for(directory, share_pct=50, segments=16, ext=False):
    """default_capacity() of the file system `directory` is on (os.statvfs: littlefs's
    block size x block count), so each board gets its default from its own flash."""
    import os

    st = os.statvfs(directory)
    return default_capacity(st[1] * st[2], share_pct, segments,
                            REC_LEN + EXT_LEN if ext else REC_LEN)


def _rec_len(version):
    """The record length of a version byte, 0 for none of ours."""
    return REC_LEN if version == _VERSION else REC_LEN + EXT_LEN if version == _VERSION_EXT \
        else 0



def _limbs_ok(v, top_max):
    # v >= 0 in base-2**30 limbs whose third limb (v >> 60) is at most top_max
    if type(v) is not int or v < 0 or v >> 30 >> 30 > top_max:
        return False
    return True


def _small(v, name):
    # None -> INVALID; a valid value is an int that stays a small int on 32-bit ports.
    if v is None:
        return INVALID
    if type(v) is not int or not -0x20000000 < v < 0x20000000:
        raise ValueError("bad " + name)
    return v


def _u16(q):
    # an analogue reading (0 .. 0xFFFE) or None -> its u16
    if q is None:
        return _NO_Q
    if type(q) is not int or not 0 <= q < _NO_Q:
        raise ValueError("bad analogue reading")
    return q


def decode(buf):
    """The record in buf (REC_LEN bytes, or REC_LEN + EXT_LEN for version 0x53) as a
    dict, or None when its CRC or version is wrong. A telemetry record has "valve_q" and
    "ain_q" (the analogue readings, None where none); one of version 0x53 has "ext" (the
    X_LEN values of heatgw.recovery) and its totals "recovery" (the persisted totals,
    heatgw.recovery.Recovery.restore)."""
    n = _rec_len(buf[0]) if len(buf) else 0
    if not n or len(buf) < n:
        return None
    body = n - 4
    mv = memoryview(buf)
    if crc32(mv[:body]) != struct.unpack_from("<I", buf, body)[0]:
        return None
    ver, kind, boot, seq, low, up_lo, up_hi, code, utc = struct.unpack_from(_HDR, buf, 0)
    rec = {"kind": kind, "boot": boot, "seq": seq, "low": low,
           "up_ms": up_lo + (up_hi << 30) if up_hi else up_lo,
           "utc": utc + _EPOCH_HALF + _EPOCH_HALF if utc else None}
    if kind == KIND_TELEMETRY:
        v = struct.unpack_from(_TEL, buf, 24)
        totals = {"energy_nj": v[0] + (v[1] << 30) + (v[2] << 30 << 30),
                  "volume_ul": v[3] + (v[4] << 30)}
        for i in range(4):
            lo = v[5 + 2 * i]
            hi = v[6 + 2 * i]
            totals[TIMES[i]] = lo + (hi << 30) if hi else lo
        rec["totals"] = totals
        for i in range(4):
            t = v[13 + i]
            rec[TEMPS[i]] = None if t == INVALID else t
        rec["flow_ml_h"] = None if v[17] == INVALID else v[17]
        rec["power_w"] = None if v[18] == INVALID else v[18]
        rec["relay"] = None if v[19] == 255 else v[19]
        rec["reason"] = v[20]
        rec["active"] = v[21]
        rec["latched"] = v[22]
        rec["heap_free"] = None if v[23] == 0xFFFF else v[23] * 16
        a = struct.unpack_from(_AIN, buf, _AIN_AT)
        rec["valve_q"] = None if a[0] == _NO_Q else a[0]
        rec["ain_q"] = [None if x == _NO_Q else x for x in a[1:]]
        if n > REC_LEN:
            x = struct.unpack_from(_EXT, buf, _BODY)
            rec["ext"] = x
            totals["recovery"] = {"compute_mwh": x[1] + (x[2] << 30),
                                  "ratio_heat_mwh": x[3] + (x[4] << 30),
                                  "heat_meter_mwh": x[7] + (x[8] << 30),
                                  "heat_own_mwh": x[9] + (x[10] << 30),
                                  "integrated": bool(x[11] & 1)}
    else:
        a0, a1, a2, a3, text = struct.unpack_from(_EVT, buf, 24)
        name = name_of(EVENT_CODES if kind == KIND_EVENT else ALARM_CODES, code)
        rec["code"] = code if name is None else name
        rec["args"] = (a0, a1, a2, a3)
        n = text.find(b"\x00")
        rec["text"] = (text if n < 0 else text[:n]).decode()
    return rec


class RecordQueue:
    def __init__(self, directory, capacity, segments=16, ack_save_every=64, ext=False):
        if type(capacity) is not int or capacity < 1:
            raise ValueError("capacity must be an int >= 1")
        if type(segments) is not int or not 2 <= segments <= 64:
            raise ValueError("segments must be 2..64")
        if type(ack_save_every) is not int or ack_save_every < 1:
            raise ValueError("ack_save_every must be >= 1")
        import os

        try:
            os.mkdir(directory)
        except OSError:
            pass  # exists (or a real error: the first open below says so)
        self.dir = directory
        self.segments = segments
        self.per_seg = -(-capacity // (segments - 1))
        self.ack_save_every = ack_save_every
        self._first = [0] * segments  # first seq of each segment (0: empty)
        self._count = [0] * segments  # records in each segment
        self._ranges = [0] * (2 * _RANGES)  # acked [lo, hi] above low; lo 0 = unused
        # ext: version-0x53 records with the telemetry extension (module doc)
        self.rec_len = REC_LEN + EXT_LEN if ext else REC_LEN
        self._seglen = [0] * segments  # record length of each segment's records
        self._rbuf = bytearray(REC_LEN + EXT_LEN)
        self._wbuf = bytearray(2 * self.rec_len)
        self._rf = None  # cached read handle and its segment
        self._rf_i = -1
        # Counters
        self.appends = 0
        self.dropped = 0
        self.last_drop = None
        self.ack_saves = 0
        self.errors = 0  # appends that raised and ack saves that failed (flash failing)
        self._scan()

    # -- opening ----------------------------------------------------------------------

    def _path(self, i):
        return "%s/seg%02d" % (self.dir, i)

    def _scan(self):
        low = 0
        cur = -1
        old_last = 0  # the newest seq of an earlier firmware's records (_OLD)
        self._bad_tail = False
        for i in range(self.segments):
            try:
                f = open(self._path(i), "rb")
            except OSError:
                continue
            try:
                size = f.seek(0, 2)
                first = 0
                # the first valid record names the segment's seqs and its records' length
                # (this queue's first, then the other version's)
                for rl in (self.rec_len, REC_LEN + REC_LEN + EXT_LEN - self.rec_len):
                    n = size // rl
                    for k in range(n):
                        f.seek(k * rl)
                        f.readinto(self._rbuf)
                        if self._valid() == rl:
                            first = struct.unpack_from("<I", self._rbuf, 4)[0] - k
                            break
                    if first > 0:
                        break
                else:
                    old_last = max(old_last, self._old_last(f, size))
            finally:
                f.close()
            if first <= 0:
                continue
            self._first[i] = first
            self._count[i] = n
            self._seglen[i] = rl
            if cur < 0 or first > self._first[cur]:
                cur = i
                self._bad_tail = size % rl != 0
        self.cur = cur
        if cur >= 0:
            self.next_seq = self._first[cur] + self._count[cur]
            for s in range(self.next_seq - 1, self._first[cur] - 1, -1):
                if self._read(s):
                    low = struct.unpack_from("<I", self._rbuf, 8)[0]
                    break
        else:
            self.next_seq = 1
        if old_last >= self.next_seq:  # an upgrade: seq goes on; what was unsent is dropped
            self.next_seq = old_last + 1
        try:  # the ack file's mark, when it is whole
            with open(self.dir + "/ack", "rb") as f:
                b = f.read(12)
            if len(b) == 12 and b[:4] == b"QACK":
                saved, crc = struct.unpack_from("<II", b, 4)
                if crc32(b[:8]) == crc and saved > low:
                    low = saved
        except OSError:
            pass
        if low >= self.next_seq:
            low = self.next_seq - 1  # an ack file from another queue: never skip records
        self.low = low
        self._saved_low = low
        old = self.oldest() or self.next_seq
        if low < old - 1:  # records gone without a drop record (lost files, an upgrade)
            self._pending_drop = (low + 1, old - 1)
            self.low = old - 1
        else:
            self._pending_drop = None
        self._tele_seq = -1  # newest telemetry seq; -1: not looked up yet

    def _old_last(self, f, size):
        """The newest seq in a segment of an earlier firmware's records (_OLD), 0: none."""
        b = self._rbuf
        for ver, rl in _OLD:
            for k in range(size // rl - 1, -1, -1):
                f.seek(k * rl)
                f.readinto(b)
                if b[0] == ver and crc32(memoryview(b)[:rl - 4]) == struct.unpack_from(
                        "<I", b, rl - 4)[0]:
                    return struct.unpack_from("<I", b, 4)[0]
        return 0

    def _valid(self):
        """The length of the valid record in _rbuf, 0 when it is none."""
        b = self._rbuf
        n = _rec_len(b[0])
        if n and crc32(memoryview(b)[:n - 4]) == struct.unpack_from("<I", b, n - 4)[0]:
            return n
        return 0

    # -- reading ----------------------------------------------------------------------

    def oldest(self):
        """The oldest seq still on flash (0: empty)."""
        o = 0
        for i in range(self.segments):
            f = self._first[i]
            if f and self._count[i] and (o == 0 or f < o):
                o = f
        return o

    def __len__(self):
        o = self.oldest()
        return self.next_seq - o if o else 0

    def _read(self, seq):
        """Read record seq into _rbuf; True when it is there and valid."""
        for i in range(self.segments):  # the segment holding seq
            f = self._first[i]
            if f and f <= seq < f + self._count[i]:
                break
        else:
            return False
        try:
            if self._rf_i != i:
                self._close_reader()
                self._rf = open(self._path(i), "rb")
                self._rf_i = i
            f = self._rf
            rl = self._seglen[i]
            f.seek((seq - self._first[i]) * rl)
            if f.readinto(self._rbuf) < rl:
                return False
        except OSError:
            self._close_reader()
            return False
        return self._valid() == rl and struct.unpack_from("<I", self._rbuf, 4)[0] == seq

    def _close_reader(self):
        if self._rf is not None:
            try:
                self._rf.close()
            except OSError:
                pass
        self._rf = None
        self._rf_i = -1

    def get(self, seq):
        """Record seq as a dict (see decode), or None when it is no longer on flash."""
        if not self._read(seq):
            return None
        return decode(self._rbuf)

    def last_totals(self):
        """(seq, totals) of the newest telemetry record on flash, or None."""
        s = self._tele_seq
        if s < 0:
            s = 0
            stop = self.oldest()
            for q in range(self.next_seq - 1, stop - 1 if stop else 0, -1):
                if self._read(q) and self._rbuf[1] == KIND_TELEMETRY:
                    s = q
                    break
            self._tele_seq = s
        if not s:
            return None
        rec = self.get(s)
        return None if rec is None else (s, rec["totals"])

    # -- acks -------------------------------------------------------------------------

    def is_acked(self, seq):
        if seq <= self.low:
            return True
        r = self._ranges
        for j in range(0, 2 * _RANGES, 2):
            if r[j] and r[j] <= seq <= r[j + 1]:
                return True
        return False

    def next_unsent(self, after=0):
        """The smallest unacked seq > after still stored, or 0 when there is none."""
        s = after + 1
        if s <= self.low:
            s = self.low + 1
        o = self.oldest()
        if s < o:
            s = o
        r = self._ranges
        while s < self.next_seq:
            for j in range(0, 2 * _RANGES, 2):
                if r[j] and r[j] <= s <= r[j + 1]:
                    s = r[j + 1] + 1
                    break
            else:
                return s
        return 0

    def peek_unsent(self):
        return self.next_unsent(0)

    def unsent(self):
        """Records stored and not acked (an upper bound when acks came out of order)."""
        o = self.oldest()
        lo = self.low + 1 if self.low + 1 > o else o
        n = self.next_seq - lo if o else 0
        r = self._ranges
        for j in range(0, 2 * _RANGES, 2):
            if r[j]:
                n -= r[j + 1] - r[j] + 1
        return n if n > 0 else 0

    def mark_acked(self, seq):
        """Record seq was acknowledged (PUBACK); True when that is news."""
        if type(seq) is not int or seq >= self.next_seq or self.is_acked(seq):
            return False
        r = self._ranges
        if seq == self.low + 1:
            self.low = seq
            merged = True
            while merged:  # absorb ranges that now touch low
                merged = False
                for j in range(0, 2 * _RANGES, 2):
                    if r[j] and r[j] <= self.low + 1:
                        if r[j + 1] > self.low:
                            self.low = r[j + 1]
                        r[j] = r[j + 1] = 0
                        merged = True
            if self.low - self._saved_low >= self.ack_save_every:
                try:
                    self.save_acks()
                except OSError:  # failing flash: the records carry low too; retried
                    self.errors += 1
            return True
        free = -1
        for j in range(0, 2 * _RANGES, 2):
            if not r[j]:
                if free < 0:
                    free = j
            elif r[j + 1] + 1 == seq:
                r[j + 1] = seq
                for k in range(0, 2 * _RANGES, 2):  # join the range that starts next
                    if k != j and r[k] == seq + 1:
                        r[j + 1] = r[k + 1]
                        r[k] = r[k + 1] = 0
                return True
            elif r[j] - 1 == seq:
                r[j] = seq
                return True
        if free < 0:
            return False  # no room: it will be sent again (at least once)
        r[free] = r[free + 1] = seq
        return True

    def save_acks(self):
        """Persist the ack low-water mark (a 12-byte file, inline in littlefs metadata)."""
        if self.low == self._saved_low:
            return
        b = self._wbuf
        b[0:4] = b"QACK"
        struct.pack_into("<I", b, 4, self.low)
        struct.pack_into("<I", b, 8, crc32(memoryview(b)[:8]))
        with open(self.dir + "/ack", "wb") as f:
            f.write(memoryview(b)[:12])
        self._saved_low = self.low
        self.ack_saves += 1

    # -- appending --------------------------------------------------------------------

    def _pack(self, off, kind, seq, low, fields, code):
        b = self._wbuf
        up = fields.get("up_ms") or 0
        if type(up) is not int or up < 0 or up >> 30 >= 0x10000:
            raise ValueError("bad up_ms")
        utc = fields.get("utc")
        if utc is not None and type(utc) is not int:
            raise ValueError("bad utc")
        if utc is not None:
            utc = utc - _EPOCH_HALF - _EPOCH_HALF
        if utc is None or utc <= 0:  # unset clocks start in 1970 or 2000: unknown
            utc = 0
        else:
            if utc >> 16 >= 0x10000:
                raise ValueError("bad utc")
        boot = fields.get("boot") or 0
        if type(boot) is not int or boot < 0:
            raise ValueError("bad boot")
        struct.pack_into(_HDR, b, off, _VERSION if self.rec_len == REC_LEN else _VERSION_EXT,
                         kind, boot & 0xFFFF, seq, low, up & _M30, up >> 30, code, utc)
        if kind == KIND_TELEMETRY:
            t = fields.get("totals")
            if not isinstance(t, dict) or "energy_nj" not in t or "volume_ul" not in t:
                raise ValueError("telemetry needs totals with energy_nj and volume_ul")
            e = t["energy_nj"]
            v = t["volume_ul"]
            if not _limbs_ok(e, _M30) or not _limbs_ok(v, 0):
                raise ValueError("bad energy/volume totals")
            tm = []
            for k in TIMES:
                x = t.get(k, 0)
                if type(x) is not int or x < 0 or x >> 30 >= 0x10000:
                    raise ValueError("bad " + k)
                tm.append(x)
            relay = fields.get("relay")
            heap = fields.get("heap_free")
            if heap is None:
                heap = 0xFFFF
            elif type(heap) is not int or heap < 0:
                raise ValueError("bad heap_free")
            else:
                heap = min(heap // 16, 0xFFFE)
            reason = fields.get("reason", 0)
            active = fields.get("active", 0)
            latched = fields.get("latched", 0)
            if type(reason) is not int or not 0 <= reason <= 255:
                raise ValueError("bad reason")
            for x in (active, latched):
                if type(x) is not int or not 0 <= x <= 0xFFFF:
                    raise ValueError("bad active/latched")
            struct.pack_into(
                _TEL, b, off + 24, e & _M30, (e >> 30) & _M30, e >> 30 >> 30,
                v & _M30, v >> 30, tm[0] & _M30, tm[0] >> 30, tm[1] & _M30, tm[1] >> 30,
                tm[2] & _M30, tm[2] >> 30, tm[3] & _M30, tm[3] >> 30,
                _small(fields.get(TEMPS[0]), TEMPS[0]), _small(fields.get(TEMPS[1]), TEMPS[1]),
                _small(fields.get(TEMPS[2]), TEMPS[2]), _small(fields.get(TEMPS[3]), TEMPS[3]),
                _small(fields.get("flow_ml_h"), "flow_ml_h"),
                _small(fields.get("power_w"), "power_w"),
                255 if relay is None else (1 if relay else 0), reason, active, latched, heap)
            ain = fields.get("ain_q") or ()
            if len(ain) > 3:
                raise ValueError("at most 3 analogue inputs")
            struct.pack_into(_AIN, b, off + _AIN_AT, _u16(fields.get("valve_q")),
                             _u16(ain[0] if len(ain) > 0 else None),
                             _u16(ain[1] if len(ain) > 1 else None),
                             _u16(ain[2] if len(ain) > 2 else None))
        elif kind == KIND_EVENT or kind == KIND_ALARM:
            args = fields.get("args") or ()
            if len(args) > 4:
                raise ValueError("at most 4 args")
            a = [0, 0, 0, 0]
            for i in range(len(args)):
                a[i] = _small(args[i], "arg")
            text = fields.get("text") or ""
            if not isinstance(text, str):
                raise ValueError("text must be a str")
            tb = text.encode()
            if len(tb) > _TEXT_LEN:  # cut at a character boundary
                n = _TEXT_LEN
                while n and (tb[n] & 0xC0) == 0x80:
                    n -= 1
                tb = tb[:n]
            struct.pack_into(_EVT, b, off + 24, a[0], a[1], a[2], a[3], tb)
            struct.pack_into(_AIN, b, off + _AIN_AT, 0, 0, 0, 0)
        else:
            raise ValueError("bad kind")
        body = self.rec_len - 4
        if body > _BODY:  # the extension: a telemetry record's values, zeros otherwise
            x = fields.get("ext") if kind == KIND_TELEMETRY else None
            if x is None:
                for i in range(off + _BODY, off + body):
                    b[i] = 0
            else:
                if len(x) != 12:
                    raise ValueError("bad ext")
                for i in (0, 5, 6):  # INVALID, or a value that stays a small int
                    if x[i] != INVALID:
                        _small(x[i], "ext")
                for i in (1, 2, 3, 4, 7, 8, 9, 10):
                    if type(x[i]) is not int or not 0 <= x[i] <= _M30:
                        raise ValueError("bad ext")
                struct.pack_into(_EXT, b, off + _BODY, x[0], x[1], x[2], x[3], x[4], x[5],
                                 x[6], x[7], x[8], x[9], x[10], x[11] & 0xFF)
        struct.pack_into("<I", b, off + body, crc32(memoryview(b)[off:off + body]))

    def _code(self, kind, fields):
        if kind == KIND_TELEMETRY:
            return 0
        code = fields.get("code", 0)
        if isinstance(code, str):
            c = code_of(EVENT_CODES if kind == KIND_EVENT else ALARM_CODES, code)
            if c < 0:
                raise ValueError("unknown code " + code)
            return c
        if type(code) is not int or not 0 <= code < 0x10000:
            raise ValueError("bad code")
        return code

    def append(self, kind, fields):
        """Store one record and return its seq. Bad fields raise ValueError and store
        nothing; a flash error raises OSError (counted in `errors`) and stores nothing."""
        code = self._code(kind, fields)
        seq = self.next_seq
        cur = self.cur
        rl = self.rec_len
        rotate = (cur < 0 or self._count[cur] >= self.per_seg or self._bad_tail
                  or self._seglen[cur] != rl)  # a segment holds one record format
        drop = self._pending_drop
        low = self.low
        if rotate:
            # The oldest segment (or an empty one) is refilled: its unacked records go.
            tgt = -1
            for i in range(self.segments):
                if not self._count[i]:
                    tgt = i
                    break
                if tgt < 0 or self._first[i] < self._first[tgt]:
                    tgt = i
            if self._count[tgt]:
                last = self._first[tgt] + self._count[tgt] - 1
                if last > low:
                    first = max(low + 1, self._first[tgt])
                    if drop is not None:
                        first = drop[0]
                    drop = (first, last)
                    low = last
        else:
            tgt = cur
        n = 0
        if drop is not None:
            count = drop[1] - drop[0] + 1
            r = self._ranges
            for j in range(0, 2 * _RANGES, 2):  # acked ones were not lost
                if r[j] and r[j + 1] >= drop[0] and r[j] <= drop[1]:
                    count -= min(r[j + 1], drop[1]) - max(r[j], drop[0]) + 1
            self._pack(0, KIND_EVENT, seq, low, {"boot": fields.get("boot"),
                       "up_ms": fields.get("up_ms"), "utc": fields.get("utc"),
                       "args": (drop[0], drop[1], count)}, _DROP)
            n = rl
        self._pack(n, kind, seq + (1 if n else 0), low, fields, code)
        n += rl
        self._close_reader()
        try:
            f = open(self._path(tgt), "wb" if rotate else "ab")
            try:
                f.write(memoryview(self._wbuf)[:n])
            finally:
                f.close()
        except OSError:
            self.errors += 1
            raise
        # Stored: only now the RAM state follows the flash.
        if rotate:
            self._first[tgt] = seq
            self._count[tgt] = 0
            self._seglen[tgt] = rl
            self.cur = tgt
            self._bad_tail = False
        self._count[tgt] += n // rl
        self.next_seq = seq + n // rl
        if drop is not None:
            self.dropped += count
            self.last_drop = drop
            self._pending_drop = None
            r = self._ranges
            for j in range(0, 2 * _RANGES, 2):
                if r[j] and r[j + 1] <= low:
                    r[j] = r[j + 1] = 0
            self.low = low
        if kind == KIND_TELEMETRY:
            self._tele_seq = self.next_seq - 1
        self.appends += 1
        return self.next_seq - 1

    def close(self):
        self._close_reader()
        self.save_acks()
