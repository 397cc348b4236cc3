"""firmware/heatgw/command.py: authenticated commands on .../cmd.

SCENARIO is MicroPython-compatible source. Payloads are made here, signed with CPython's
hmac (an implementation independent of the node's), written to a steps file, and run
through the firmware module in CPython in-process and in the real micropython binary,
which must give the very same verdicts (acks, events, actions, inbox requests). The fuzz
run (10,000 payloads) is in-process; a 200-payload sample of it runs on the binary too.
"""

import hashlib
import hmac
import json
import random
import sys

import pytest

from host_tools import command as signer
from host_tools.paths import FIRMWARE
from tests.payload_schemas import validate

sys.path.insert(0, str(FIRMWARE))

from heatgw import command  # noqa: E402

KEY = bytes(range(100, 132))
OTHER = bytes(range(1, 33))
NODE = "n1"
ACK_TOPIC = "heatgw/s1/n1/cmd/ack"


def validate_acks(results):
    """Every ack of a run (as the node publishes it on .../cmd/ack) against its schema."""
    acks = [x[0] for x in results if isinstance(x[0], dict)]
    for ack in acks:
        validate(ACK_TOPIC, json.dumps(ack).encode())
    return len(acks)

SCENARIO = r"""
import json
import os
from binascii import unhexlify
from heatgw import secrets
from heatgw.command import Commands, forget_counter
from heatgw.inbox import Inbox


def mk(d, node, inbox=None, spath=True):
    s = secrets.load(d + "/secrets.json")
    return Commands(node, s, inbox or Inbox(), (d + "/ctr.a", d + "/ctr.b"),
                    secrets_path=(d + "/secrets.json") if spath else None)


def one(c, p, now):
    ack, ev, act = c.handle(p, now)
    evs, resets = c.inbox.drain()
    return [ack, ev, [act[0], act[1]] if act else None,
            [[e["source"], e["what"], e["value"]] for e in evs], list(resets)]


def run(d, node, steps_path):
    # steps: one JSON list a line: ["reboot"], or [payload hex, now_ms or null]
    c = mk(d, node)
    out = []
    with open(steps_path) as f:
        for line in f:
            st = json.loads(line)
            if st[0] == "reboot":
                c = mk(d, node)
                out.append(["reboot", c.last_ctr, c.secrets.names()])
                continue
            p = st[0]
            if p == "@none":
                p = None
            elif p == "@int":
                p = 7
            elif p.startswith("@str:"):
                p = p[5:]
            else:
                p = unhexlify(p)
            out.append(one(c, p, st[1]))
    out.append(["counts", c.counts, c.last_ctr])
    return out


def scn_edges(d, good_hex, key_hex):
    out = {}
    good = unhexlify(good_hex)
    # no command key provisioned: every command is refused
    c = Commands("n1", secrets.Secrets(), Inbox(), (d + "/e1.a", d + "/e1.b"))
    out["no_key"] = c.handle(good)[0]
    s = secrets.from_dict({"command_key": key_hex})
    # the inbox refuses (full): failed, the counter is spent
    ib = Inbox(1)
    ib.post("console", "trip_reset")
    c = Commands("n1", s, ib, (d + "/e2.a", d + "/e2.b"))
    out["inbox_full"] = [c.handle(good)[0], c.last_ctr]
    # the counter cannot be saved: not executed, and refused again in this boot
    c = Commands("n1", s, Inbox(), (d + "/nodir/e3.a", d + "/nodir/e3.b"))
    out["save_fails"] = [c.handle(good)[0], c.inbox.drain()[1], c.handle(good)[0]]
    # counter files damaged: refused until provisioning forgets the counter
    for n in ("e4.a", "e4.b"):
        with open(d + "/" + n, "wb") as f:
            f.write(b"garbage")
    c = Commands("n1", s, Inbox(), (d + "/e4.a", d + "/e4.b"))
    out["counter_lost"] = [c.counter_lost, c.handle(good)[0]]
    forget_counter((d + "/e4.a", d + "/e4.b"))
    c = Commands("n1", s, Inbox(), (d + "/e4.a", d + "/e4.b"))
    out["after_forget"] = [c.counter_lost, c.handle(good)[0]]
    return out
"""

RIG = r"""
from heatgw.failsafe import FailSafe, Inputs
from heatgw.inbox import Inbox, sources
from heatgw.command import Commands
from heatgw import secrets

CTL = {"tick_ms": 1000, "sink_return_max_c": 45.0, "sink_return_hyst_k": 2.0,
       "it_coolant_max_c": 44.0, "it_coolant_hyst_k": 2.0, "sink_flow_min_m3h": 3.0,
       "sink_flow_hyst_m3h": 0.5, "sink_signal": True, "stale_s": 5, "valve_travel_s": 45,
       "recover_s": 120, "min_dwell_s": 600}
SENSORS = {}
for _n in ("supply", "return", "sink_return", "it_coolant"):
    SENSORS[_n] = {"r0_ohm": 1000, "wires": 4, "offset_k": 0.0, "min_c": 0.0,
                   "max_c": 120.0, "critical": _n in ("sink_return", "it_coolant")}
FLOW = {"type": "pulse", "litres_per_pulse": 0.1, "max_m3h": 15.0, "critical": True}


def scn_failsafe(d, key_hex, payloads):
    # The control task's merge (heatgw.app) around a FailSafe whose it_coolant_high trip
    # is latched: remote commands ask, the fail-safe decides.
    fs = FailSafe(CTL, sensors_cfg=SENSORS, flow_cfg=FLOW, now_ms=0,
                  latched=("it_coolant_high",))
    ins = Inputs(SENSORS)
    ib = Inbox(sink_sources=sources(CTL))  # the contact, as heatgw.app builds it
    cmds = Commands("n1", secrets.from_dict({"command_key": key_hex}), ib,
                    (d + "/fs.a", d + "/fs.b"))
    board = {"sink_available": True, "maintenance": False}
    temps = {"supply": 50.0, "return": 35.0, "sink_return": 30.0, "it_coolant": 46.0}
    t = [0]
    log = []

    def tick(n):
        reuse = 0
        for _ in range(n):
            t[0] += 1000
            for k in temps:
                ins.temps_c[k] = temps[k]
                ins.temp_valid_ms[k] = t[0] - 500
            ins.flow_m3h = 5.0
            ins.flow_valid_ms = t[0] - 500
            ins.valve_at_reuse = fs.relay_reuse
            evs, resets = ib.drain(t[0])
            ib.merge(ins, board, t[0])
            for src in resets:
                for e in fs.reset_latches(t[0], src):
                    log.append([e["kind"], e["reason"], e["result"], e["source"]])
            fs.update(t[0], ins)
            reuse += 1 if fs.relay_reuse else 0
        return reuse

    out = [["boot", tick(5), fs.state, list(fs.active)]]
    # 1: the trip holds (46 C): maintenance off and reset change nothing
    ack = [cmds.handle(payloads[i])[0]["ok"] for i in (0, 1, 2)]
    out.append(["trip holds", ack, tick(900), fs.state, list(fs.latched)])
    # 2: the condition clears, the latch holds: still bypass without a reset
    temps["it_coolant"] = 30.0
    out.append(["latched", tick(900), fs.state, list(fs.latched)])
    # 3: a signed reset clears it; reuse once recovered
    ack = cmds.handle(payloads[3])[0]["ok"]
    out.append(["reset", ack, tick(900) > 0, fs.state, list(fs.latched)])
    # 4: maintenance on: bypass within a tick
    ack = cmds.handle(payloads[4])[0]["ok"]
    out.append(["maintenance", ack, tick(1), fs.state, fs.cause])
    out.append(["log", log])
    return out
"""


def sign(doc, key=KEY):
    b = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
    return b + b"." + hmac.new(key, b, hashlib.sha256).hexdigest().encode()


def cmd(ctr, name="maintenance", args=None, node=NODE, cid=None, **extra):
    d = {"v": 1, "node": node, "id": f"c{ctr}" if cid is None else cid, "ctr": ctr, "cmd": name}
    if args is not None:
        d["args"] = args
    d.update(extra)
    return d


def _write_steps(path, steps):
    with open(path, "w") as f:
        for st in steps:
            if st[0] != "reboot" and isinstance(st[0], bytes):
                st = [st[0].hex(), st[1]]
            f.write(json.dumps(st) + "\n")


def _provision(d, key=KEY):
    sys.path.insert(0, str(FIRMWARE))
    from heatgw import secrets

    secrets.save(str(d / "secrets.json"), {"command_key": key, "mqtt_password": "Pw-Yak-1"})


def run_cp(d, steps, node=NODE):
    _provision(d)
    _write_steps(d / "steps.jsonl", steps)
    ns = {"__name__": "command_scenario"}
    exec(SCENARIO, ns)
    return json.loads(json.dumps(ns["run"](str(d), node, str(d / "steps.jsonl"))))


def run_mp(mp, d, steps, node=NODE):
    _provision(d)
    _write_steps(d / "steps.jsonl", steps)
    src = SCENARIO + f"\nprint(json.dumps(run({str(d)!r}, {node!r}, " \
                     f"{str(d / 'steps.jsonl')!r})))\n"
    return mp.run_json(src)[0]


def _main_steps():
    new_key = bytes(range(200, 232))
    big_id = cmd(40, "publish_state")
    raw = json.dumps(big_id, separators=(",", ":")).encode()
    exact = raw[:-1] + b" " * (command.MAX_PAYLOAD - 65 - len(raw)) + b"}"  # 512 bytes
    over = raw[:-1] + b" " * (command.MAX_PAYLOAD - 64 - len(raw)) + b"}"  # 513 bytes
    invalid = [
        b"{not json}", b"[1,2]", b'{"v":1}x', json.dumps(cmd(100, extra=1)).encode(),
        cmd(101, v=2), cmd(102, node="n2"), cmd(103, cid=""), cmd(104, cid="x" * 33),
        cmd(105, cid="a b"), cmd(0, "reset"), cmd(1 << 30, "reset"), cmd(106, "reset", v=True),
        {"v": 1, "node": NODE, "id": "s", "ctr": "107", "cmd": "reset"},
        {"v": 1, "node": NODE, "id": "f", "ctr": 108.0, "cmd": "reset"},
        {"v": 1, "node": NODE, "id": "b", "ctr": True, "cmd": "reset"},
        cmd(109, "reboot"), cmd(110), cmd(111, args={"on": 1}),
        cmd(112, args={"on": True, "x": 1}), cmd(113, "resend", {"from_seq": 5, "to_seq": 4}),
        cmd(114, "resend", {"from_seq": -1, "to_seq": 4}), cmd(115, "reset", {"x": 1}),
        cmd(116, "rotate_key", {"key": "ab" * 31}), cmd(117, "reset", args=[1]),
        b'{"v":1,"node":"n1","id":"u","ctr":118,"cmd":"reset","args":{}}\xff'[:-1] + b"\xff}",
    ]
    steps = [
        [sign(cmd(1, args={"on": True})), None],
        [sign(cmd(2, "publish_state")), None],
        [sign(cmd(3, "resend", {"from_seq": 10, "to_seq": 20})), None],
        [sign(cmd(5, "reset")), None],
        [sign(cmd(1, args={"on": True})), None],  # replay
        [sign(cmd(4, args={"on": False})), None],  # never used, but below the last
        [sign(cmd(6, args={"on": False}), OTHER), None],  # forged: another key
        [sign(cmd(6, args={"on": False})).replace(b'"n1"', b'"n2"'), None],  # tampered
        [sign(over), None], [sign(exact), None],
        [b"", None], [b"x" * 100, None], [sign(cmd(41, "reset"))[:-1], None],
        [sign(cmd(42, "reset"))[:-64] + b"g" * 64, None], ["@none", None], ["@int", None],
        [sign(cmd(43, "reset")).replace(b".", b",", 1)[:0] + sign(cmd(43, "reset"))[:-65]
         + b" " + sign(cmd(43, "reset"))[-64:], None],
    ]
    steps += [[sign(b) if isinstance(b, bytes) else sign(b), None] for b in invalid]
    steps += [
        [sign(cmd(50, args={"on": False})), None],  # the invalid ones spent no counter
        ["reboot"],
        [sign(cmd(50, args={"on": False})), None],  # replay after a reboot
        [sign(cmd(51, "publish_state")), None],
        ["@str:" + sign(cmd(52, "publish_state")).decode(), None],  # a str payload
        [sign(cmd(53, "rotate_key", {"key": signer.wrap_key(KEY, new_key, 53).hex()})), None],
        [sign(cmd(54, "reset")), None],  # the old key no longer works
        [sign(cmd(54, "reset"), new_key), None],
        ["reboot"],
        [sign(cmd(55, "reset"), new_key), None],
        # throttled rejection events: one per minute, then the count of the rest
        [sign(cmd(56, "reset")), 0], [sign(cmd(57, "reset")), 1000],
        [b"junk", 59999], [sign(cmd(58, "reset")), 60000],
        [sign(cmd(59, "reset"), new_key), 60001],  # accepted: never throttled
    ]
    return steps, new_key


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    steps, _ = _main_steps()
    return steps, run_cp(tmp_path_factory.mktemp("cmd_cp"), steps)


def test_accepted_commands_reach_the_inbox_or_the_caller(main_run):
    _, r = main_run
    assert r[0] == [{"id": "c1", "ok": True},
                    {"kind": "command", "result": "accepted", "source": "mqtt",
                     "cmd": "maintenance", "id": "c1", "ctr": 1, "on": True},
                    None, [["mqtt", "maintenance", True]], []]
    assert r[1][0] == {"id": "c2", "ok": True} and r[1][2] == ["publish_state", None]
    assert r[2][2] == ["resend", [10, 20]]
    assert r[2][1]["from_seq"] == 10 and r[2][1]["to_seq"] == 20
    assert r[3][0]["ok"] and r[3][4] == ["mqtt"]  # a latch reset, for the fail-safe


def _errors(r, i, j):
    return [x[0]["error"] if x[0]["ok"] is False else "OK" for x in r[i:j]]


def test_replayed_forged_and_tampered_commands_are_refused(main_run):
    _, r = main_run
    assert _errors(r, 4, 8) == [
        "replayed: ctr 1 is not above the last accepted 5",
        "replayed: ctr 4 is not above the last accepted 5",
        "forged: the mac does not match the body (wrong key, or the body was changed)",
        "forged: the mac does not match the body (wrong key, or the body was changed)"]
    assert r[4][0]["id"] == "c1"  # authenticated: its id is known
    assert r[6][0]["id"] is None  # not authenticated: not read
    for x in r[4:8]:
        assert x[3] == [] and x[4] == [] and x[2] is None  # nothing reached the inbox
        assert x[1]["result"] == "rejected" and x[1]["suppressed"] == 0


def test_size_limit_is_512_bytes(main_run):
    _, r = main_run
    assert _errors(r, 8, 10) == ["oversized: 513 bytes, the limit is 512", "OK"]


def test_malformed_payloads_are_refused(main_run):
    _, r = main_run
    frame = "malformed: expected <json body>.<64 hex digits of its HMAC-SHA256>"
    assert _errors(r, 10, 17) == [frame, frame, frame, "malformed: the mac must be 64 hex "
                                  "digits", "malformed: the payload must be bytes",
                                  "malformed: the payload must be bytes", frame]


def test_authenticated_but_invalid_commands_are_refused_and_spend_no_counter(main_run):
    _, r = main_run
    errs = _errors(r, 17, 42)
    assert all(e.startswith("invalid: ") for e in errs), errs
    assert errs[0] == "invalid: the body is not a JSON object"
    assert errs[1] == errs[2] == "invalid: the body must be a JSON object, from { to }"
    assert errs[3].startswith("invalid: unknown field")  # json.dumps spacing: "extra"
    assert errs[4] == "invalid: v: must be 1"
    assert errs[5] == 'invalid: node: this is node "n1"'
    assert errs[6] == errs[7] == errs[8] == "invalid: id: must be 1..32 printable ASCII " \
                                           "characters"
    assert errs[9] == errs[10] == errs[12] == errs[13] == errs[14] == \
        "invalid: ctr: must be an int 1..1073741823"
    assert errs[11] == "invalid: v: must be 1"
    assert errs[15].startswith("invalid: cmd: must be one of config_set, maintenance, "
                               "publish_state")
    assert errs[16] == "invalid: args.on: missing"
    assert errs[17] == "invalid: args.on: must be true or false"
    assert errs[18] == "invalid: args: maintenance takes on"
    assert errs[19] == errs[20]
    assert "0 <= from_seq <= to_seq" in errs[19]
    assert errs[21] == "invalid: args: reset takes no args"
    assert errs[22] == "invalid: args.key: must be 64 hex digits"
    assert errs[23] == "invalid: args: must be an object"
    assert errs[24] == "invalid: the body is not a JSON object"  # not UTF-8
    assert r[42][0] == {"id": "c50", "ok": True}  # ctr 50 after invalid ctr 100..118


def test_the_counter_survives_a_reboot_and_a_replay_then_fails(main_run):
    _, r = main_run
    assert r[43] == ["reboot", 50, ["command_key", "mqtt_password"]]
    assert r[44][0]["error"] == "replayed: ctr 50 is not above the last accepted 50"
    assert r[45][0]["ok"] and r[46][0]["ok"]


def test_key_rotation_with_the_current_key(main_run):
    steps, r = main_run
    rot = r[47]
    assert rot[0] == {"id": "c53", "ok": True} and rot[1]["cmd"] == "rotate_key"
    assert "args" not in rot[1] and "key" not in rot[1]
    assert r[48][0]["error"].startswith("forged")  # the old key is refused at once
    assert r[49][0]["ok"]
    assert r[50] == ["reboot", 54, ["command_key", "mqtt_password"]]  # the others stay
    assert r[51][0]["ok"]  # the new key came back from the secrets file
    text = json.dumps(r)
    _, new_key = _main_steps()
    for k in (KEY, new_key):
        assert k.hex() not in text and k.hex().upper() not in text


def test_rejection_events_are_throttled_and_counted(main_run):
    _, r = main_run
    assert [x[1] is None for x in r[52:56]] == [False, True, True, False]
    assert r[55][1]["suppressed"] == 2
    assert r[56][1]["result"] == "accepted"
    counts = r[-1]
    assert counts[0] == "counts" and counts[2] == 59
    # the counts after the last reboot (the first boots' are gone with their objects)
    assert counts[1] == {"accepted": 2, "oversized": 0, "malformed": 1, "no_key": 0,
                         "forged": 3, "invalid": 0, "replayed": 0, "failed": 0, "error": 0}


def test_micropython_gives_the_same_verdicts(mp, main_run, tmp_path):
    steps, r = main_run
    got = run_mp(mp, tmp_path, steps)
    assert got == r
    assert validate_acks(got) > 50


def _edges_src(d):
    return SCENARIO + (f"\nprint(json.dumps(scn_edges({str(d)!r}, "
                       f"{sign(cmd(7, 'reset')).hex()!r}, {KEY.hex()!r})))\n")


def test_edges_no_key_inbox_full_save_failure_lost_counter(mp, tmp_path):
    ns = {"__name__": "command_edges"}
    exec(SCENARIO, ns)
    d = tmp_path / "cp"
    d.mkdir()
    got = json.loads(json.dumps(ns["scn_edges"](str(d), sign(cmd(7, "reset")).hex(),
                                                KEY.hex())))
    assert got["no_key"] == {"id": None, "ok": False, "error":
                             "no_key: no command key provisioned: commands are refused"}
    assert got["inbox_full"] == [{"id": "c7", "ok": False,
                                  "error": "failed: inbox: full (1 requests); try again "
                                  "next tick"}, 7]
    assert got["save_fails"][0]["error"].startswith("failed: the counter could not be saved")
    assert got["save_fails"][1] == []  # not executed
    assert got["save_fails"][2]["error"].startswith("replayed")
    assert got["counter_lost"] == [True, {"id": None, "ok": False, "error":
                                          "failed: the command counter was lost (its "
                                          "files are damaged): provision a new command key"}]
    assert got["after_forget"] == [False, {"id": "c7", "ok": True}]
    d = tmp_path / "mp"
    d.mkdir()
    mp_got = mp.run_json(_edges_src(d))[0]
    # the exception type in "could not be saved (OSError)" is the same on both
    assert mp_got == got


def test_no_command_brings_a_relay_out_of_bypass_while_a_trip_holds(mp, tmp_path):
    pl = [sign(cmd(1, args={"on": True})), sign(cmd(2, args={"on": False})),
          sign(cmd(3, "reset")), sign(cmd(4, "reset")), sign(cmd(5, args={"on": True}))]
    ns = {"__name__": "command_rig"}
    exec(RIG, ns)
    (tmp_path / "cp").mkdir()
    got = json.loads(json.dumps(ns["scn_failsafe"](str(tmp_path / "cp"), KEY.hex(), pl)))
    assert got[0] == ["boot", 0, "bypass", ["it_coolant_high"]]
    assert got[1] == ["trip holds", [True, True, True], 0, "bypass", ["it_coolant_high"]]
    assert got[2] == ["latched", 0, "bypass", ["it_coolant_high"]]
    assert got[3] == ["reset", True, True, "reuse", []]
    assert got[4] == ["maintenance", True, 0, "bypass", "maintenance"]
    assert got[5][1] == [["reset", "it_coolant_high", "refused", "mqtt"],
                         ["reset", "it_coolant_high", "cleared", "mqtt"]]
    (tmp_path / "mp").mkdir()
    src = RIG + f"\nimport json\nprint(json.dumps(scn_failsafe({str(tmp_path / 'mp')!r}, " \
                f"{KEY.hex()!r}, {pl!r})))\n"
    assert mp.run_json(src)[0] == got


# ------------------------------------------------------------------------------ fuzz

CMDS = ("maintenance", "reset", "publish_state", "resend", "rotate_key")


class Fuzzer:
    """Random and mutated payloads, with an oracle that knows the key and the counter."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.key = KEY
        self.ctr = 0  # the highest counter signed so far
        self.sent = []  # validly signed payloads, for replays and mutations

    def _valid(self, fresh=True):
        rng = self.rng
        name = rng.choice(CMDS[:4] * 6 + CMDS[4:])
        if fresh:
            self.ctr += rng.choice((1, 1, 1, 2, 7))
            ctr = self.ctr
        else:
            ctr = rng.randrange(0, self.ctr + 1)
        args = None
        if name == "maintenance":
            args = {"on": rng.random() < 0.5}
        elif name == "resend":
            a = rng.randrange(0, 10000)
            args = {"from_seq": a, "to_seq": a + rng.randrange(0, 500)}
        elif name == "rotate_key":
            args = {"key": signer.wrap_key(self.key, rng.randbytes(32), ctr).hex()}
        return sign(cmd(ctr, name, args, cid=f"f{rng.randrange(10**6)}"), self.key)

    def _mutate(self, p):
        rng = self.rng
        b = bytearray(p)
        for _ in range(rng.choice((1, 1, 2, 3, 8))):
            op = rng.randrange(7)
            if op == 0 and b:
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
            elif op == 1 and b:
                del b[rng.randrange(len(b))]
            elif op == 2:
                b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
            elif op == 3 and b:
                i = rng.randrange(len(b))
                b[i:i] = b[i:i + rng.randrange(1, 40)]
            elif op == 4:
                del b[rng.randrange(len(b) + 1):]
            elif op == 5:
                b += rng.randbytes(rng.randrange(1, 80))
            elif op == 6 and len(b) > 65:  # case of a hex digit: still the same mac
                i = len(b) - rng.randrange(1, 65)
                b[i:i + 1] = bytes(b[i:i + 1]).swapcase()
        return bytes(b)

    def payload(self):
        rng = self.rng
        k = rng.randrange(100)
        if k < 20:
            p = self._valid()
        elif k < 30:
            p = self._valid(fresh=False)  # stale counter
        elif k < 40 and self.sent:
            p = rng.choice(self.sent)  # replay
        elif k < 70:
            p = self._mutate(self._valid() if rng.random() < 0.5 or not self.sent
                             else rng.choice(self.sent))
        elif k < 80:  # a mutated body signed again: authenticated garbage
            body = self._mutate(self._valid()[:-65])
            p = sign(body, self.key)
        elif k < 85:
            p = sign(self._valid()[:-65], OTHER)  # forged
        elif k < 90:
            p = rng.randbytes(rng.randrange(0, 700))
        elif k < 95:
            p = bytes(rng.choice(b'{}[]":,.0123456789abcdef ') for _ in
                      range(rng.randrange(0, 600)))
        else:
            p = self._valid()[:-65] + b"." + rng.randbytes(32).hex().encode()
        return p

    def verify(self, p):
        """The oracle: (validly signed with the current key, its ctr or None)."""
        if len(p) < 67 or p[-65] != 0x2E:
            return False, None
        try:
            mac = bytes.fromhex(p[-64:].decode("ascii"))
        except ValueError:
            return False, None
        body = p[:-65]
        if len(mac) != 32 or not hmac.compare_digest(
                hmac.new(self.key, body, hashlib.sha256).digest(), mac):
            return False, None
        try:
            doc = json.loads(body)
        except ValueError:
            return True, None
        return True, doc.get("ctr") if isinstance(doc, dict) else None


def _fuzz_steps(seed, n):
    """The fuzzer and n of its payloads."""
    fz = Fuzzer(seed)
    return fz, [fz.payload() for _ in range(n)]


def test_fuzz_10000_payloads_none_accepted_unless_signed_and_fresh(tmp_path):
    from heatgw import secrets as node_secrets
    from heatgw.inbox import Inbox

    d = str(tmp_path)
    node_secrets.save(d + "/secrets.json", {"command_key": KEY})

    def boot():
        return command.Commands(NODE, node_secrets.load(d + "/secrets.json"), Inbox(),
                                (d + "/ctr.a", d + "/ctr.b"), secrets_path=d + "/secrets.json")

    c = boot()
    fz = Fuzzer(20261201)
    last = 0
    verdicts = {}
    accepted = 0
    for i in range(10000):
        p = fz.payload()
        signed, ctr = fz.verify(p)
        ack, ev, act = c.handle(p, i * 250)
        c.inbox.drain()
        validate(ACK_TOPIC, json.dumps(ack).encode())
        reason = "accepted" if ack["ok"] else ack["error"].split(":")[0]
        verdicts[reason] = verdicts.get(reason, 0) + 1
        if ack["ok"]:
            accepted += 1
            assert signed and len(p) <= 512, p
            assert type(ctr) is int and ctr > last, (p, last)
            last = ctr
            fz.sent.append(p)
            doc = json.loads(p[:-65])
            if doc["cmd"] == "rotate_key":
                fz.key = signer.wrap_key(fz.key, bytes.fromhex(doc["args"]["key"]), ctr)
        elif signed and type(ctr) is int and ctr > last and len(p) <= 512:
            # refused although signed and fresh: must be a content error of the body
            assert reason == "invalid", (p, ack)
        if not signed:
            assert reason in ("oversized", "malformed", "forged"), (p, ack)
        if i % 1000 == 999:
            c = boot()  # a reboot: the counter (and a rotated key) come from flash
            assert c.last_ctr == last
            assert c.secrets.get("command_key").reveal() == fz.key
    assert c.counts["error"] == 0
    assert sum(verdicts.values()) == 10000
    # every kind of verdict happened, and plenty of each
    for r in ("accepted", "oversized", "malformed", "forged", "invalid", "replayed"):
        assert verdicts.get(r, 0) >= 100, verdicts
    assert accepted == verdicts["accepted"]


def test_fuzz_sample_gives_identical_verdicts_on_micropython(mp, tmp_path):
    fz, payloads = _fuzz_steps(77, 200)
    steps = [[p, k * 5000] for k, p in enumerate(payloads)]
    steps.insert(100, ["reboot"])
    (tmp_path / "cp").mkdir()
    (tmp_path / "mp").mkdir()
    want = run_cp(tmp_path / "cp", steps)
    got = run_mp(mp, tmp_path / "mp", steps)
    assert got == want
    assert validate_acks(got) == 200
    reasons = {x[0]["error"].split(":")[0] if not x[0]["ok"] else "accepted"
               for x in want if isinstance(x[0], dict)}
    assert {"accepted", "malformed", "forged", "replayed", "invalid"} <= reasons


# ------------------------------------------------------------------ the host-side signer

def _tool_node(tmp_path, key_file_text):
    from heatgw import secrets as node_secrets
    from heatgw.inbox import Inbox

    d = tmp_path / "node"
    d.mkdir()
    node_secrets.save(str(d / "secrets.json"), {"command_key": KEY})
    (tmp_path / "op.key").write_text(key_file_text)
    return command.Commands(NODE, node_secrets.load(str(d / "secrets.json")), Inbox(),
                            (str(d / "c.a"), str(d / "c.b")),
                            secrets_path=str(d / "secrets.json"))


def _tool(tmp_path, capsys, *argv, key="op.key"):
    rc = signer.main(["--key-file", str(tmp_path / key), "--counter-file",
                      str(tmp_path / "op.ctr"), "--node", NODE, *argv])
    out = capsys.readouterr()
    return rc, out.out.strip().encode(), out.err


def test_signer_output_is_accepted_once_and_its_counter_increments(tmp_path, capsys):
    node = _tool_node(tmp_path, KEY.hex() + "\n")
    rc, p, err = _tool(tmp_path, capsys, "maintenance", "on")
    assert rc == 0 and err == ""
    assert (tmp_path / "op.ctr").read_text() == "1\n"
    ack, ev, _ = node.handle(p)
    assert ack == {"id": "maintenance-1", "ok": True}
    assert node.inbox.drain()[0][0]["value"] is True
    assert node.handle(p)[0]["error"].startswith("replayed: ctr 1")  # a replay
    rc, p2, _ = _tool(tmp_path, capsys, "--id", "op-7", "resend", "5", "9")
    assert node.handle(p2) == ({"id": "op-7", "ok": True},
                               {"kind": "command", "result": "accepted", "source": "mqtt",
                                "cmd": "resend", "id": "op-7", "ctr": 2, "from_seq": 5,
                                "to_seq": 9}, ("resend", (5, 9)))
    for argv in (["reset"], ["publish_state"], ["maintenance", "off"]):
        assert node.handle(_tool(tmp_path, capsys, *argv)[1])[0]["ok"]
    assert (tmp_path / "op.ctr").read_text() == "5\n"
    # the node's own secrets.json works as the key file too
    (tmp_path / "node.json").write_text((tmp_path / "node" / "secrets.json").read_text())
    assert node.handle(_tool(tmp_path, capsys, "reset", key="node.json")[1])[0]["ok"]


def test_signed_sink_statements_reach_the_inbox_stamped_and_forgeries_do_not(tmp_path,
                                                                            capsys):
    """`sink available|unavailable` (the MQTT source of the sink rule): a statement on the
    inbox of source mqtt, stamped with the time the node handled it; a forged or invalid
    one changes nothing (heatgw.inbox judges its timeout; tests/test_bms.py end to end)."""
    from heatgw.inbox import Inbox

    node = _tool_node(tmp_path, KEY.hex() + "\n")
    node.inbox = Inbox(sink_sources=(("mqtt", 5000),))
    _, p, _ = _tool(tmp_path, capsys, "sink", "available")
    ack, ev, action = node.handle(p, 1000)
    assert ack == {"id": "sink-1", "ok": True} and action is None
    assert ev == {"kind": "command", "result": "accepted", "source": "mqtt", "cmd": "sink",
                  "id": "sink-1", "ctr": 1, "available": True}
    ib = node.inbox
    assert ib.drain(1500)[0] == [{"kind": "request", "source": "mqtt",
                                  "what": "sink_available", "value": True}]

    class Ins:
        pass

    ins = Ins()
    ib.merge(ins, {}, 6000)  # stamped at 1000 (its handling), not 1500 (the drain)
    assert (ins.sink_available, ins.sink_silent) == (True, None)
    ib.merge(ins, {}, 6001)
    assert (ins.sink_available, ins.sink_silent) == (False, "mqtt")
    # forged (another key) and invalid (args) statements: refused, nothing queued
    forged = sign(cmd(7, "sink", {"available": True}), OTHER)
    assert node.handle(forged, 7000)[0]["error"].startswith("forged")
    bad = sign(cmd(8, "sink", {"available": 1}))
    assert node.handle(bad, 7000)[0]["error"] == "invalid: args.available: must be true " \
                                                 "or false"
    assert ib.queued("mqtt") == 0
    _, p, _ = _tool(tmp_path, capsys, "sink", "unavailable")
    assert node.handle(p, 8000)[1]["available"] is False
    assert ib.drain(8000)[0][0]["value"] is False


def test_signer_rotates_the_key_without_printing_it(tmp_path, capsys):
    node = _tool_node(tmp_path, KEY.hex())
    rc, p, err = _tool(tmp_path, capsys, "rotate_key", "--new-key-file",
                       str(tmp_path / "new.key"))
    assert rc == 0 and "new key written to" in err
    new = bytes.fromhex((tmp_path / "new.key").read_text().strip())
    assert (tmp_path / "new.key").stat().st_mode & 0o077 == 0
    for text in (p.decode(), err):
        for k in (KEY, new):
            assert k.hex() not in text
    assert node.handle(p)[0] == {"id": "rotate_key-1", "ok": True}
    assert node.handle(_tool(tmp_path, capsys, "reset")[1])[0]["error"].startswith("forged")
    assert node.handle(_tool(tmp_path, capsys, "reset", key="new.key")[1])[0]["ok"]


def test_signer_refuses_bad_files_clearly(tmp_path, capsys):
    (tmp_path / "op.key").write_text("abc")
    rc, _, err = _tool(tmp_path, capsys, "reset")
    assert rc == 2 and "must hold 64 hex digits" in err and "abc" not in err
    (tmp_path / "op.key").write_text(KEY.hex())
    (tmp_path / "op.ctr").write_text("seven")
    rc, _, err = _tool(tmp_path, capsys, "reset")
    assert rc == 2 and "must hold the last counter used" in err
    (tmp_path / "op.ctr").write_text("3")
    rc, _, err = _tool(tmp_path, capsys, "resend", "9", "5")
    assert rc == 2 and "FROM <= TO" in err
    assert (tmp_path / "op.ctr").read_text() == "3"  # nothing signed, nothing spent


@pytest.fixture
def broker(tmp_path):
    import shutil
    import socket
    import subprocess
    import time

    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until it listens (not a time limit on the code under test)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait()


def test_signer_publishes_to_a_broker_and_prints_the_nodes_ack(tmp_path, capsys, broker):
    import threading

    import paho.mqtt.client as mqtt

    node = _tool_node(tmp_path, KEY.hex())
    topic = f"heatgw/plant/{NODE}/cmd"
    ready = threading.Event()
    seen = []

    def on_message(client, userdata, msg):  # the node's side, as the lead will wire it
        seen.append(msg.payload)
        ack, _, _ = node.handle(msg.payload)
        client.publish(topic + "/ack", json.dumps(ack), qos=1)

    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="node-n1")
    cl.on_message = on_message
    cl.on_subscribe = lambda *a: ready.set()
    cl.connect("127.0.0.1", broker)
    cl.subscribe(topic, qos=1)
    cl.loop_start()
    try:
        assert ready.wait(10)
        args = ["--site", "plant", "--broker", f"127.0.0.1:{broker}", "--ack-timeout", "10"]
        rc, out, _ = _tool(tmp_path, capsys, *args, "maintenance", "on")
        assert rc == 0 and json.loads(out) == {"id": "maintenance-1", "ok": True}
        (tmp_path / "op.ctr").write_text("0\n")  # an operator's stale counter
        rc, out, _ = _tool(tmp_path, capsys, *args, "reset")
        assert rc == 1 and json.loads(out)["error"].startswith("replayed: ctr 1")
        (tmp_path / "bad.key").write_text(OTHER.hex())
        rc, out, _ = _tool(tmp_path, capsys, *args, "reset", key="bad.key")
        assert rc == 1 and json.loads(out) == {
            "id": None, "ok": False, "error": "forged: the mac does not match the body "
            "(wrong key, or the body was changed)"}
    finally:
        cl.loop_stop()
        cl.disconnect()
    assert len(seen) == 3 and node.counts["accepted"] == 1


def test_payload_types_bytearray_memoryview_and_long_str(tmp_path):
    from heatgw import secrets as node_secrets
    from heatgw.inbox import Inbox

    c = command.Commands(NODE, node_secrets.from_dict({"command_key": KEY.hex()}), Inbox(),
                         (str(tmp_path / "a"), str(tmp_path / "b")))
    assert c.handle(bytearray(sign(cmd(1, "reset"))))[0]["ok"]
    assert c.handle(memoryview(sign(cmd(2, "reset"))))[0]["ok"]
    assert c.handle("x" * 100000)[0]["error"] == "oversized: 100000 bytes, the limit is 512"
    assert c.handle(bytes(513))[0]["error"].startswith("oversized")
    assert c.counts["error"] == 0
