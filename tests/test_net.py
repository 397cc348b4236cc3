"""Network bring-up, reconnect, DNS and NTP (firmware/heatgw/net.py, ntp.py).

The unix port has no `network` module: the node runs on the host board's virtual-time
asyncio against a stand-in interface written here (active, connect, disconnect,
isconnected, status, ifconfig), scripted to fail, drop and come back, and a stub
`network` with the ESP32 port's STAT_ codes. DNS and NTP go to real UDP responders on
127.0.0.1 written here in CPython, over real sockets. The hardware test needs a board.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SSID = "SiteNet-7f3a9c"
PASSWORD = "hunter2-very-secret-pw"

STUB_NETWORK = """
STA_IF = 0
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
"""

# The node side: a stand-in interface driven by SCRIPT, a fake board naming it, events
# printed as the Gateway prints them (so stdout shows whatever an event would carry).
NODE = r"""
import json
import board
asyncio = board.install_asyncio()
import network
from heatgw import clock, net, secrets

SCRIPT = json.loads(%r)
CFG = json.loads(%r)
EVENTS = []


def now():
    return clock.ticks_ms()


class Iface:
    # Wi-Fi: each connect() takes the next outcome of SCRIPT["attempts"]:
    #   ["ok", up_ms]    connected after 300 ms, link lost up_ms later
    #   ["fail", name]   status network.<name> after 200 ms, never connected
    #   ["hang"]         status CONNECTING for ever
    # LAN: isconnected() follows SCRIPT["link"], [[from_ms, up], ...]
    def __init__(self):
        self.attempts = list(SCRIPT.get("attempts", ()))
        self.cur = None
        self.t0 = 0
        self.connects = []
        self.active_fail = SCRIPT.get("active_fail", 0)
        self.crash = SCRIPT.get("crash_first", False)
        self.is_active = False

    def active(self, v=None):
        if v is None:
            return self.is_active
        if self.active_fail:
            self.active_fail -= 1
            raise OSError(5)
        self.is_active = bool(v)

    def connect(self, ssid=None, key=None):
        self.connects.append(now())
        if type(ssid) is not str or (key is not None and type(key) is not str):
            raise TypeError("connect wants str credentials")
        self.ok_creds = (ssid, key) == (CFG.get("ssid"), CFG.get("password"))
        self.cur = self.attempts.pop(0) if self.attempts else ["hang"]
        self.t0 = now()

    def disconnect(self):
        self.cur = None

    def _el(self):
        return clock.ticks_diff(now(), self.t0)

    def isconnected(self):
        if self.crash:  # a driver bug: the task crashes, its wrapper restarts it
            self.crash = False
            raise RuntimeError("driver bug")
        if "link" in SCRIPT:
            up = False
            for t, u in SCRIPT["link"]:
                if now() >= t:
                    up = u
            return self.is_active and up
        c = self.cur
        return (c is not None and c[0] == "ok" and self.ok_creds
                and 300 <= self._el() < 300 + c[1])

    def status(self):
        c = self.cur
        if c is None:
            return network.STAT_IDLE
        if c[0] == "fail" and self._el() >= 200:
            return getattr(network, c[1])
        if c[0] == "ok" and self._el() >= 300 + c[1]:
            return network.STAT_BEACON_TIMEOUT
        return network.STAT_GOT_IP if self.isconnected() else network.STAT_CONNECTING

    def ifconfig(self):
        return ("10.0.0.7", "255.255.255.0", "10.0.0.1", CFG.get("dns", "10.0.0.1"))


IFACE = Iface()


class FakeBoard:
    NAME = "fake"
    NET_INTERFACES = (SCRIPT.get("kind", "wlan"),)

    def network_interface(self, kind):
        return IFACE


def on_event(ev):
    ev["t"] = now()
    EVENTS.append(ev)
    print("event:", json.dumps(ev))


GW = None
if SCRIPT.get("gateway"):  # the real Gateway: its event() stamps, logs and prints
    from heatgw import start
    from heatgw.app import Gateway

    cfg, _e, source, configured, _m = start.load_config("/nonexistent/config.json")
    def sink(kind, rec):
        if kind == "event":
            rec["t"] = now()
            EVENTS.append(rec)

    GW = Gateway(board, cfg, start.build_meter(cfg["meter"]), cfg_source=source,
                 configured=configured, sinks=(sink,))
    on_event = GW.event  # noqa: F811


values = {}
if CFG.get("ssid"):
    values["wifi_ssid"] = CFG["ssid"]
if CFG.get("password") is not None:
    values["wifi_password"] = CFG["password"]
sec = secrets.from_dict(values)
print("secrets:", repr(sec), str(sec.get("wifi_password")))
brd = board if SCRIPT.get("host") else FakeBoard()
n = net.Net(brd, sec, on_event, poll_ms=100, connect_timeout_ms=5000, base_ms=1000,
            cap_ms=8000, jitter_pct=25, **CFG.get("net", {}))


async def main():
    if GW is not None:  # as Gateway.add_task runs a restartable task
        t = asyncio.create_task(GW._restartable("net", n.run, asyncio))
    else:
        t = asyncio.create_task(n.run(asyncio))
    await asyncio.sleep_ms(SCRIPT["run_ms"])
    if SCRIPT.get("restart"):  # as Gateway.add_task restarts a crashed task
        t.cancel()
        await asyncio.sleep_ms(10)
        asyncio.create_task(n.run(asyncio))
        await asyncio.sleep_ms(SCRIPT["restart"])
    for e in EVENTS:
        e.setdefault("t", e.get("up_ms"))
        e.setdefault("state", None)
    import sys
    loaded = [m for m in ("dns", "ntp", "wlan") if "heatgw." + m in sys.modules]
    print(json.dumps({"events": EVENTS, "connects": IFACE.connects, "up": n.up,
                      "broker_ip": n.broker_ip, "utc": clock.utc_s(), "t": now(),
                      "loaded": loaded}))


asyncio.run(main())
"""


def run_node(mp, tmp_path, script, cfg=None):
    (tmp_path / "network.py").write_text(STUB_NETWORK)
    cfg = {"ssid": SSID, "password": PASSWORD} if cfg is None else cfg
    out = mp.run_code(NODE % (json.dumps(script), json.dumps(cfg)), board="host",
                      extra_path=[tmp_path])
    lines = out.splitlines()
    return json.loads(lines[-1]), out


def states(res):
    return [(e["state"], e.get("reason")) for e in res["events"]]


def test_wifi_up_drop_and_back_events_in_order(mp, tmp_path):
    script = {"attempts": [["ok", 10_000], ["fail", "STAT_NO_AP_FOUND"], ["ok", 60_000]],
              "run_ms": 30_000}
    res, out = run_node(mp, tmp_path, script)
    assert states(res) == [("up", None), ("down", "link_lost"), ("down", "no_ap_found"),
                           ("up", None)]
    ev = res["events"]
    assert ev[0]["iface"] == "wlan" and ev[0]["ip"] == "10.0.0.7"
    assert 300 <= ev[0]["t"] <= 500  # up as soon as the link is (polled every 100 ms)
    assert 10_300 <= ev[1]["t"] <= 10_500  # the drop is seen within a poll
    assert 750 <= ev[2]["retry_in_ms"] <= 1000  # first retry: base, minus <= 25 % jitter
    assert res["up"] is True
    assert SSID not in out and PASSWORD not in out  # no line shows a secret
    assert "secrets: <Secrets: wifi_password, wifi_ssid> <secret>" in out


def test_backoff_grows_to_the_cap_with_bounded_jitter(mp, tmp_path):
    script = {"attempts": [["fail", "STAT_WRONG_PASSWORD"]] * 8 + [["ok", 10**8]],
              "run_ms": 120_000}
    res, out = run_node(mp, tmp_path, script)
    downs = [e for e in res["events"] if e["state"] == "down"]
    assert [e["reason"] for e in downs] == ["wrong_password"] * 8
    retry = [e["retry_in_ms"] for e in downs]
    nominal = [1000, 2000, 4000, 8000, 8000, 8000, 8000, 8000]  # doubling, capped
    for r, d in zip(retry, nominal, strict=True):
        assert d * 3 // 4 <= r <= d, (retry, nominal)
    # connect() calls are spaced by the fail time (200 ms, polled) plus the backoff
    gaps = [b - a for a, b in zip(res["connects"], res["connects"][1:], strict=False)]
    for g, r in zip(gaps, retry[:len(gaps)], strict=True):
        assert r + 200 <= g <= r + 300, (gaps, retry)
    assert states(res)[-1] == ("up", None)
    assert PASSWORD not in out and SSID not in out


def test_jitter_spreads_retries_within_bounds(mp):
    (res,) = mp.run_json("""
import json
from heatgw.net import Backoff
b = Backoff(1000, 60000, 25)
out = []
for _ in range(200):
    b.reset()
    out.append([b.next_ms() for _ in range(9)])
print(json.dumps(out))
""")
    nominal = [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
    for row in res:
        for r, d in zip(row, nominal, strict=True):
            assert d * 3 // 4 <= r <= d
    firsts = {row[0] for row in res}
    assert len(firsts) > 50  # jittered, not in step
    assert min(r[6] for r in res) < 50_000 < max(r[6] for r in res)  # the whole 25 %


def test_a_hung_attempt_times_out_and_retries(mp, tmp_path):
    res, _ = run_node(mp, tmp_path, {"attempts": [["hang"], ["ok", 10**8]], "run_ms": 10_000})
    assert states(res) == [("down", "timeout_connecting"), ("up", None)]
    assert 5000 <= res["events"][0]["t"] <= 5200  # connect_timeout_ms


def test_missing_ssid_is_a_clear_error_event_not_a_crash(mp, tmp_path):
    res, out = run_node(mp, tmp_path, {"attempts": [["ok", 10**8]], "run_ms": 20_000},
                        cfg={})
    assert states(res) == [("error", None)]
    assert res["events"][0]["error"] == "no wifi_ssid in the secrets file"
    assert res["connects"] == [] and res["up"] is False
    assert res["t"] >= 20_000  # the task idles: the node ran on


def test_restarted_task_brings_the_link_up_again(mp, tmp_path):
    res, _ = run_node(mp, tmp_path, {"attempts": [["ok", 10**8], ["ok", 10**8]],
                                     "run_ms": 2000, "restart": 2000})
    assert states(res) == [("up", None), ("up", None)]
    assert len(res["connects"]) == 1  # the link stayed up: reported, not reconnected


def test_runs_as_a_restartable_gateway_task(mp, tmp_path):
    """Under Gateway._restartable (what add_task(name, fn) runs): a crash inside the task
    is a `task crashed` event, the restart brings the link up; the Gateway prints every
    event and none shows a secret."""
    res, out = run_node(mp, tmp_path, {"gateway": True, "crash_first": True,
                                       "attempts": [["ok", 10**8]], "run_ms": 5000})
    evs = [e for e in res["events"] if e["kind"] != "boot"]
    assert [(e["kind"], e["state"]) for e in evs] == [("task", "crashed"), ("net", "up")]
    assert "RuntimeError" in evs[0]["error"]
    assert evs[1]["t"] - evs[0]["t"] >= 1000  # after the wrapper's restart backoff
    assert out.count("event:") == len(res["events"])
    assert SSID not in out and PASSWORD not in out


def test_lan_link_up_down_and_phy_retry(mp, tmp_path):
    script = {"kind": "lan", "link": [[1000, True], [5000, False], [8000, True]],
              "active_fail": 1, "run_ms": 12_000}
    res, _ = run_node(mp, tmp_path, script)
    assert states(res) == [("down", "phy_error_5"), ("up", None), ("down", "link_down"),
                           ("up", None)]
    ev = res["events"]
    assert all(e["iface"] == "lan" for e in ev)
    assert 1000 <= ev[1]["t"] <= 1200 and 5000 <= ev[2]["t"] <= 5200
    assert res["connects"] == []  # no connect() on a wired link


def test_host_board_network_is_up_at_once(mp, tmp_path):
    res, _ = run_node(mp, tmp_path, {"host": True, "run_ms": 1000,
                                     "attempts": []}, cfg={"net": {"broker_host": "localhost"}})
    assert [(e["state"], e["iface"]) for e in res["events"]] == [("up", "host")]
    assert res["events"][0]["t"] == 0
    assert res["broker_ip"] == "127.0.0.1"  # the host's resolver, in the network task


# -- DNS and NTP against real UDP responders on 127.0.0.1 -----------------------------


class Responder:
    """A UDP server on 127.0.0.1 in a thread: answer(data) -> reply bytes or None."""

    def __init__(self, answer):
        self.answer = answer
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.port = self.s.getsockname()[1]
        self.got = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, addr = self.s.recvfrom(1024)
            except OSError:
                return
            self.got.append(data)
            reply = self.answer(data)
            if reply:
                self.s.sendto(reply, addr)

    def close(self):
        self.s.close()


@pytest.fixture
def responder():
    made = []

    def make(answer):
        made.append(Responder(answer))
        return made[-1]

    yield make
    for r in made:
        r.close()


UTC_2026 = 1767225600  # 2026-01-01T00:00:00Z


def ntp_answer(utc=UTC_2026, stratum=2, li=0, mode=4, echo=True, frac=0):
    def answer(req):
        t = utc + 2208988800
        origin = req[40:48] if echo else b"\x99" * 8
        return (bytes([li << 6 | 4 << 3 | mode, stratum, 6, 0xEC]) + bytes(20) + origin
                + struct.pack("!II", t, 0) + struct.pack("!II", t, frac))
    return answer


NTP_NODE = """
import json
import board
asyncio = board.install_asyncio()
from heatgw import clock, ntp


async def main():
    t0 = clock.ticks_ms()
    utc = await ntp.query(asyncio, "127.0.0.1", %d, timeout_ms=2000)
    took = clock.ticks_diff(clock.ticks_ms(), t0)
    if utc is not None:
        clock.set_utc_s(utc)
    await asyncio.sleep_ms(5000)
    print(json.dumps({"utc": utc, "took_ms": took, "later": clock.utc_s()}))


asyncio.run(main())
"""


def ntp_node(mp, port):
    return mp.run_json(NTP_NODE % port)[0]


def test_ntp_sets_utc_from_a_real_responder(mp, responder):
    r = responder(ntp_answer(frac=0x80000000))  # .5 s: rounds up
    res = ntp_node(mp, r.port)
    assert res["utc"] == UTC_2026 + 1
    assert res["later"] == UTC_2026 + 6  # clock.utc_s() runs on with the ticks
    assert res["took_ms"] < 2000  # answered, not timed out
    req = r.got[0]
    assert len(req) == 48 and req[0] == 0x23  # v4 client request


@pytest.mark.parametrize("bad", [
    {"stratum": 0},  # kiss-o'-death / unsynchronised server
    {"li": 3},  # alarm: clock not synchronised
    {"echo": False},  # not an answer to our request (stale or spoofed)
    {"mode": 3},  # not a server reply
    {"utc": 1000},  # a server with no real time (1970)
])
def test_ntp_refuses_a_bad_reply_and_times_out_in_virtual_time(mp, responder, bad):
    r = responder(ntp_answer(**bad))
    res = ntp_node(mp, r.port)
    assert res["utc"] is None and res["later"] is None  # the clock stays unset
    assert res["took_ms"] >= 2000  # the bounded wait ran out (virtual ms)
    assert r.got, "the request reached the responder"  # (took_ms: the node's virtual ms)


def test_ntp_without_a_server_is_none(mp):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens: ICMP unreachable or silence, either way None
    res = ntp_node(mp, port)
    assert res["utc"] is None


def dns_answer(ip="192.0.2.10", rcode=0, wrong_id=False):
    def answer(q):
        qid = q[:2] if not wrong_id else bytes([q[0] ^ 0xFF, q[1]])
        end = q.index(b"\x00", 12) + 5
        question = q[12:end]
        if rcode:
            return qid + bytes([0x81, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0]) + question
        rr = (b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 60, 2) + b"\xc0\x0c"  # a CNAME
              + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(ip))
        return qid + b"\x81\x80\x00\x01\x00\x02\x00\x00\x00\x00" + question + rr
    return answer


def test_broker_name_resolved_in_the_network_task_and_cached(mp, tmp_path, responder):
    r = responder(dns_answer())
    cfg = {"ssid": SSID, "password": PASSWORD, "dns": "127.0.0.1",
           "net": {"broker_host": "broker.site.example", "dns_port": r.port}}
    script = {"attempts": [["ok", 10_000], ["ok", 10**8]], "run_ms": 20_000}
    res, _ = run_node(mp, tmp_path, script, cfg)
    assert res["broker_ip"] == "192.0.2.10"
    assert len(r.got) == 2  # once per link-up, not per poll
    q = r.got[0]
    assert b"\x06broker\x04site\x07example\x00\x00\x01\x00\x01" in q
    assert "dns_failed" not in [e["state"] for e in res["events"]]
    assert res["loaded"] == ["wlan"]  # heatgw.dns and ntp dropped after the queries


@pytest.mark.parametrize("answer", [dns_answer(rcode=3), dns_answer(wrong_id=True)])
def test_dns_failure_keeps_the_node_running_and_says_so(mp, tmp_path, responder, answer):
    r = responder(answer)
    cfg = {"ssid": SSID, "password": PASSWORD, "dns": "127.0.0.1",
           "net": {"broker_host": "broker.site.example", "dns_port": r.port}}
    res, _ = run_node(mp, tmp_path, {"attempts": [["ok", 10**8]], "run_ms": 10_000}, cfg)
    assert res["broker_ip"] is None
    assert [e["state"] for e in res["events"]] == ["up", "dns_failed"]
    assert res["up"] is True


def test_ip_literal_broker_needs_no_query(mp, tmp_path, responder):
    r = responder(dns_answer())
    cfg = {"ssid": SSID, "password": PASSWORD, "dns": "127.0.0.1",
           "net": {"broker_host": "10.1.2.3", "dns_port": r.port}}
    res, _ = run_node(mp, tmp_path, {"attempts": [["ok", 10**8]], "run_ms": 2000}, cfg)
    assert res["broker_ip"] == "10.1.2.3" and r.got == []


def test_ntp_runs_in_the_network_task_after_link_up(mp, tmp_path, responder):
    r = responder(ntp_answer())
    cfg = {"ssid": SSID, "password": PASSWORD,
           "net": {"ntp_server": "127.0.0.1", "ntp_port": r.port}}
    res, _ = run_node(mp, tmp_path, {"attempts": [["ok", 10**8]], "run_ms": 3000}, cfg)
    sets = [e for e in res["events"] if e["state"] == "utc_set"]
    assert len(sets) == 1 and sets[0]["utc"] == UTC_2026
    assert UTC_2026 + 2 <= res["utc"] <= UTC_2026 + 3  # set at ~0.4 s, read at 3 s
    assert "ntp" not in res["loaded"]  # loaded for the query, dropped after it


HW_PROBE = """
import json
import asyncio
import board
from heatgw import clock, net, secrets

EV = []
sec = secrets.from_dict(json.loads(%r))
n = net.Net(board, sec, EV.append, broker_host=%r, ntp_server=%r)


async def main():
    asyncio.create_task(n.run(asyncio))
    t0 = clock.ticks_ms()
    late = 0
    while clock.ticks_diff(clock.ticks_ms(), t0) < 30000 and not (n.up and n.utc_synced):
        t = clock.ticks_ms()
        await asyncio.sleep_ms(50)
        late = max(late, clock.ticks_diff(clock.ticks_ms(), t) - 50)
    print(json.dumps({"events": EV, "up": n.up, "broker_ip": n.broker_ip,
                      "utc": clock.utc_s(), "worst_late_ms": late}))


asyncio.run(main())
"""


@pytest.mark.hardware
def test_bring_up_on_a_real_board(tmp_path):
    """On a board (HEATGW_PORT, HEATGW_BOARD): its first interface comes up within 30 s,
    the broker name (HEATGW_BROKER_HOST, default pool.ntp.org) resolves and NTP
    (HEATGW_NTP_SERVER, default pool.ntp.org) sets UTC; Wi-Fi boards take
    HEATGW_WIFI_SSID / HEATGW_WIFI_PASSWORD. No printed line shows them."""
    from host_tools.paths import BOARDS, FIRMWARE

    def mpremote(*args):
        exe = str(Path(sys.executable).parent / "mpremote")
        proc = subprocess.run([exe, "connect", os.environ["HEATGW_PORT"], *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    board = os.environ.get("HEATGW_BOARD", "esp32_devkitc")
    values = {}
    if os.environ.get("HEATGW_WIFI_SSID"):
        values["wifi_ssid"] = os.environ["HEATGW_WIFI_SSID"]
        values["wifi_password"] = os.environ.get("HEATGW_WIFI_PASSWORD", "")
    if "heatgw" not in mpremote("fs", "ls"):
        mpremote("fs", "mkdir", ":heatgw")
    mpremote("fs", "cp", str(BOARDS / board / "board.py"), ":board.py")
    for name in ("__init__.py", "clock.py", "net.py", "ntp.py", "secrets.py"):
        mpremote("fs", "cp", str(FIRMWARE / "heatgw" / name), ":heatgw/" + name)
    script = tmp_path / "net_probe.py"
    ntp_host = os.environ.get("HEATGW_NTP_SERVER", "pool.ntp.org")
    script.write_text(HW_PROBE % (json.dumps(values),
                                  os.environ.get("HEATGW_BROKER_HOST", "pool.ntp.org"),
                                  ntp_host))
    out = mpremote("run", str(script))
    for v in values.values():
        if v:
            assert v not in out, "a secret was printed"
    res = json.loads(out.strip().splitlines()[-1])
    assert res["up"], res
    assert res["broker_ip"], res
    assert res["utc"] and res["utc"] > 1704067200, res
    print("worst asyncio lateness during bring-up:", res["worst_late_ms"], "ms")


def test_utc_is_for_payloads_only():
    """Metering and control never read UTC, and only the network task sets it."""
    from host_tools.paths import FIRMWARE

    for name in ("meter.py", "meterkernel.py", "failsafe.py", "flow.py", "rtd.py",
                 "fluid.py"):
        assert "utc_s" not in (FIRMWARE / "heatgw" / name).read_text(), name
    import ast

    setters = sorted(p.name for p in (FIRMWARE / "heatgw").glob("*.py")
                     for node in ast.walk(ast.parse(p.read_text()))
                     if isinstance(node, ast.Call)
                     and getattr(node.func, "attr", None) == "set_utc_s")
    assert setters == ["net.py"], setters
