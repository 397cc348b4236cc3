"""heatgw.app.Gateway on the host board (standalone, in the real micropython binary):
the fault latch at the relay pins, the dead-man output, task classes and restarts, the
command inbox on the control path, flash errors that must not stop control.

The coroutines are stepped by hand with a stand-in asyncio whose sleep_ms moves the
host board's virtual clock: no wall clock, no event loop. (The hang test reads the hung
process's state from /proc a few times; it bounds no time.)
"""

import json

RIG = r"""
import json
import board
from heatgw import start

cfg, errors, source, configured, _mig = start.load_config("/nonexistent/config.json")
meter = start.build_meter(cfg["meter"])
from heatgw.app import Gateway
EV = []


def sink(kind, rec):
    if kind == "event":
        EV.append(rec)


gw = Gateway(board, cfg, meter, cfg_source=source, configured=configured, sinks=(sink,))


class Aio:
    # stand-in asyncio: sleep_ms moves virtual time and yields once
    def __init__(self):
        self.sleeps = []

    def sleep_ms(self, ms):
        self.sleeps.append(ms)
        board.clock.vt += ms
        yield


def step(coro, n=1):
    # run coro to its next n suspensions; True if it finished
    try:
        for _ in range(n):
            coro.send(None)
    except StopIteration:
        return True
    return False


def coils():
    return {n: board.relay_pin(n).coil_energised() for n in board.RELAY_PINS}


def dm():
    return board.dead_man().level


def kinds():
    return [e["kind"] for e in EV]
"""


def run(mp, body, tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("HEATGW_FLASH", str(tmp_path / "flash.bin"))
    out = mp.run_code(RIG + body.replace("print(json.dumps(", "print('R', json.dumps("), **kw)
    return [json.loads(line[2:]) for line in out.splitlines() if line.startswith("R ")]


def test_after_a_critical_crash_no_relay_is_energised_until_reset(mp, tmp_path, monkeypatch):
    out = run(mp, r"""
gw.drive_relays(True)
before = coils()
gw._toggle_dead_man()
dm0 = dm()
gw._toggle_dead_man()
dm1 = dm()


async def bad(aio):
    raise OSError(5)


done = step(gw._critical("sampler", bad, Aio()))
after = coils()
gw.drive_relays(True)  # the control task's next tick asks for reuse again
again = coils()
gw._toggle_dead_man()
print(json.dumps([before, dm0, dm1, done, gw.fault, after, again, gw.relay_reuse, dm(),
                  EV[-1]]))
""", tmp_path, monkeypatch)
    before, dm0, dm1, done, fault, after, again, reuse, dm_after, ev = out[0]
    assert before == {"reuse": True, "cooler_inhibit": True}
    assert (dm0, dm1) == (1, 0)  # healthy: every call is an edge
    assert done and fault == "crash:sampler"
    assert after == again == {"reuse": False, "cooler_inhibit": False}
    assert reuse is False
    assert dm_after == 0  # the dead-man output stopped toggling
    assert (ev["kind"], ev["task"], ev["error"]) == ("crash", "sampler", "OSError(5,)")


def test_a_critical_task_that_returns_is_a_fault_too(mp, tmp_path, monkeypatch):
    out = run(mp, r"""
async def quits(aio):
    return


step(gw._critical("supervisor", quits, Aio()))
gw.drive_relays(True)
print(json.dumps([gw.fault, coils(), EV[-1]["error"]]))
""", tmp_path, monkeypatch)
    fault, c, err = out[0]
    assert fault == "crash:supervisor" and not any(c.values()) and err == "returned"


def test_restartable_task_restarts_with_capped_backoff_and_reports_failing(
        mp, tmp_path, monkeypatch):
    out = run(mp, r"""
runs = []


async def flaky(aio):
    runs.append(board.clock.vt)
    raise OSError(5)


aio = Aio()
co = gw._restartable("persist", flaky, aio)
gw.drive_relays(True)
step(co, 9)
first = [aio.sleeps[:], [e for e in EV if e["kind"] == "task_failing"], coils(), gw.fault]
aio.sleeps.clear()
board.clock.vt += 700000  # a quiet spell beyond the window: the count starts again
step(co, 1)
print(json.dumps(first + [aio.sleeps, EV[-1], len(runs)]))
""", tmp_path, monkeypatch)
    sleeps, failing, c, fault, sleeps2, last, nruns = out[0]
    assert sleeps == [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
    assert len(failing) == 1 and failing[0]["task"] == "persist"
    assert failing[0]["crashes"] == 5
    assert c == {"reuse": True, "cooler_inhibit": True} and fault is None  # unaffected
    assert sleeps2 == [1000]
    assert (last["kind"], last["state"], last["crashes"]) == ("task", "crashed", 1)
    assert "OSError" in last["error"] and nruns == 10


def test_add_task_refuses_duplicates_and_bad_names(mp, tmp_path, monkeypatch):
    out = run(mp, r"""
res = []
for name in ("persist", "", None):
    try:
        gw.add_task(name, None)
        res.append("accepted")
    except ValueError as e:
        res.append(str(e))
gw.add_task("network", None)
print(json.dumps([res, [t[0] for t in gw._tasks], [t[2] for t in gw._tasks]]))
""", tmp_path, monkeypatch)
    res, names, crit = out[0]
    assert "already registered" in res[0] and "non-empty" in res[1] and "non-empty" in res[2]
    assert names == ["sampler", "control", "persist", "supervisor", "network"]
    assert crit == [True, True, False, True, False]


def test_inbox_requests_reach_the_failsafe_with_their_source(mp, tmp_path, monkeypatch):
    out = run(mp, r"""
now = board.clock.ticks_ms()
gw._read_board_inputs()
gw.inbox.post("console", "maintenance", True)
gw.inbox.post("mqtt", "trip_reset")
evs = gw._merge_inputs(now)
fs_ev = gw.failsafe.update(now, gw.inputs)
ins = gw.inputs
print(json.dumps([evs, ins.maintenance, ins.maintenance_by,
                  [e for e in fs_ev if e.get("reason") == "maintenance"]]))
""", tmp_path, monkeypatch)
    evs, maint, by, trips = out[0]
    assert evs[0] == {"kind": "request", "source": "console", "what": "maintenance",
                      "value": True}
    assert (evs[1]["kind"], evs[1]["source"]) == ("reset", "mqtt")
    assert maint is True and by == "console"
    assert trips[0]["kind"] == "trip" and trips[0]["values"] == {"source": "console"}


def test_a_failing_flash_is_counted_and_control_goes_on(mp, tmp_path, monkeypatch):
    out = run(mp, r"""
dev = board.flash_device()
dev.fail_ops(1000)
gw.event({"kind": "test"})  # the event log append fails
saved = gw.save("latch")  # the control path's save fails
raised = None
try:
    gw._save("interval")  # what persist calls: raises, so persist is restarted
except OSError as e:
    raised = e.args[0]
dev.fail_ops(0)
ok = gw.save("interval")
print(json.dumps([gw.flash_errors, gw.log.errors, gw.status()["flash_errors"], saved, raised,
                  ok is not None, dev.failed > 0]))
""", tmp_path, monkeypatch)
    errors, log_errors, status_errors, saved, raised, ok, failed = out[0]
    assert errors == 1 and log_errors >= 1 and status_errors == errors + log_errors
    assert saved is None and raised == 5 and ok and failed


def test_dead_man_hold_must_fit_the_tick(mp, tmp_path, monkeypatch):
    out = run(mp, r"""
e = start.dead_man_error
print(json.dumps([e(1000, 1400), e(1000, 1000), e(1000, 1500), e(1000, 1501),
                  e(1000, 999), e(500, 1400), e(1000, 0), e(1000, None)]))
""", tmp_path, monkeypatch)
    r = out[0]
    assert r[:3] == [None, None, None]
    assert "control.tick_ms = 1000" in r[3] and "dead-man hold of 1501 ms" in r[3]
    assert "control.tick_ms = 1000" in r[4] and "tick_ms in 666..999" in r[4]
    assert "control.tick_ms = 500" in r[5] and "1400" in r[5]
    assert "DEAD_MAN_HOLD_MS" in r[6] and "DEAD_MAN_HOLD_MS" in r[7]


def test_a_refused_tick_runs_the_default_configuration(mp, tmp_path, monkeypatch):
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps({"version": 1, "control": {"tick_ms": 500}}))
    out = run(mp, rf"""
c, errs, src, conf, _m = start.load_config({str(cfg_path)!r}, 1400)
c2, errs2, src2, conf2, _m2 = start.load_config({str(cfg_path)!r}, 700)
print(json.dumps([src, errs, c["control"]["tick_ms"], conf, src2, errs2]))
""", tmp_path, monkeypatch)
    src, errs, tick, conf, src2, errs2 = out[0]
    assert src == "default" and tick == 1000 and conf is False
    assert len(errs) == 1 and "control.tick_ms = 500" in errs[0] and "1400 ms" in errs[0]
    assert src2 == "file" and errs2 == []


def test_an_injected_hang_blocks_instead_of_spinning(tmp_path, monkeypatch):
    # The hung node must not burn a core while the harness waits for its watchdog: its
    # process sleeps (state S in /proc), where a busy loop would stay runnable (R).
    import subprocess
    import time

    from host_tools.paths import REPO, micropypath, micropython_cmd

    code = """
import board
class Link:
    hang_armed = True
    def send(self, line):
        pass
board._link = Link()
print("hanging")
board.relay_pin("reuse").value(0)
print("returned")
"""
    env = dict(__import__("os").environ, MICROPYPATH=micropypath("host", ()),
               HEATGW_FLASH=str(tmp_path / "flash.bin"))
    proc = subprocess.Popen([*micropython_cmd(), "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "hanging"
        states = []
        for _ in range(20):  # sampled: a sleeping process may wake for an instant
            with open(f"/proc/{proc.pid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
            time.sleep(0.05)
        assert proc.poll() is None  # still hung
        assert states.count("S") >= 18, states
    finally:
        proc.kill()
        proc.wait()


def test_uptime_counts_past_2_30_ms_without_allocating(mp, tmp_path, monkeypatch):
    # 13 days of uptime is more ms than a 31-bit small int holds: the per-tick update
    # must stay allocation-free (heap locked) and the total exact.
    out = run(mp, r"""
import micropython
gw._up_s = 13 * 86400 - 1
gw._up_ms = 500
t = gw._up_last_ms


def ticks(t):
    micropython.heap_lock()
    try:
        gw._uptime(board.clock.ticks_add(t, 700))
        gw._uptime(board.clock.ticks_add(t, 1400))
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True


ok = ticks(t)
print(json.dumps([ok, gw.uptime_ms]))
""", tmp_path, monkeypatch)
    assert out == [[True, (13 * 86400 - 1) * 1000 + 500 + 1400]]
