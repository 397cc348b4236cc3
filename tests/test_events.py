"""heatgw.events: the bounded event log on flash (littlefs on the host's NOR flash)."""

import json

from host_tools.paths import BOARDS

CODE = """
import json, os, vfs
from flashdev import FlashDev, mount
from heatgw.events import EventLog

def fresh():
    try:
        vfs.umount("/fl")
    except OSError:
        pass
    dev = FlashDev(%(img)r, block_size=4096, block_count=32)
    mount(dev, "/fl")
    return dev

out = {}
dev = fresh()
log = EventLog("/fl", per_file=4)
for i in range(10):
    log.append({"kind": "trip", "reason": "r%%d" %% i, "values": {"x": i + 0.5}})
out["seqs"] = [e["seq"] for e in log.events()]
out["reasons"] = [e["reason"] for e in log.events()]
# a reset: a new EventLog on a remounted flash carries the numbering on
dev = fresh()
log = EventLog("/fl", per_file=4)
out["after_reboot"] = [e["seq"] for e in log.events()]
out["next_seq"] = log.append({"kind": "boot"})
# a power cut in the middle of the next append: the flash drops everything from there
dev.arm_cut(3, 10)
log.append({"kind": "trip", "reason": "lost"})
dev = fresh()
log = EventLog("/fl", per_file=4)
out["after_cut"] = [e["seq"] for e in log.events()]
out["next_after_cut"] = log.next_seq
# garbage in a file: skipped, never raises
with open("/fl/events.0", "ab") as f:
    f.write(b'{"seq": 99}\\t00000000\\n not json at all\\n')
out["with_garbage"] = [e["seq"] for e in EventLog("/fl", per_file=4).events()]
try:
    log.append([1, 2])
except TypeError:
    out["typeerror"] = True
print(json.dumps(out))
"""


def test_event_log_bounded_persistent_and_cut_safe(mp, tmp_path):
    img = str(tmp_path / "ev.bin")
    out = mp.run_json(CODE % {"img": img}, extra_path=[BOARDS / "host"])[0]
    # 10 events, 4 per file, two files taking turns: seq 1-4 fill events.0, 5-8 events.1,
    # 9-10 start events.0 over. Kept, oldest first: the full older file and the current.
    assert out["seqs"] == [5, 6, 7, 8, 9, 10]
    assert out["reasons"] == ["r4", "r5", "r6", "r7", "r8", "r9"]
    assert out["after_reboot"] == [5, 6, 7, 8, 9, 10]
    assert out["next_seq"] == 11
    # the append cut short (seq 12) never appears, the one before it stays, numbering
    # goes on from the highest kept seq
    assert out["after_cut"] == [5, 6, 7, 8, 9, 10, 11]
    assert out["next_after_cut"] == 12
    assert out["with_garbage"] == out["after_cut"]
    assert out["typeerror"] is True
    json.dumps(out)
