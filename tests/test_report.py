"""`heatgw report` (host_tools/report.py, reportdata.py, co2.py) on records with known truth.

A simulated run (the harness: the real firmware on the host board against the plant, with
telemetry to a real mosquitto) recorded by a real `heatgw monitor --record`: the report's
figures, read from its report.json, match the run's truth from the harness summary (the
node's own final meter, the plant's IF97 heat, the relay transitions the harness saw at
the pins' side, the node's last published seq). The same record with records taken out:
the completeness and the gap ranges are exactly what was taken. A constructed record with
the fields later firmware adds (the compute load's energy and the heat recovery ratio, a
pump meter's readings): the ratio, the pump electricity and the CO₂ figures are the known
arithmetic of known inputs, estimates labelled. The HTML opens in headless Chromium and is
screenshotted (the PNG is kept under the test's folder); the PDF is printed by it.
"""

import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib

import pytest

from host_tools import chromium, co2, records
from host_tools.paths import REPO
from tests.brokers import Broker

PLANT_TOLERANCE_PCT = 1.0  # the node's meter against IF97 over a 20-minute run (README)


def run_report(*args, env=None):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", "report", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, **(env or {})))


def record_run(tmp, sc):
    """(record path, summary, scenario): scenario `sc` through the harness with telemetry
    to a real mosquitto, recorded by a real `heatgw monitor --record`."""
    (tmp / "scenario.json").write_text(json.dumps(sc))
    rec = tmp / "run.sqlite"
    with Broker(tmp / "mosquitto") as b:
        out = open(tmp / "monitor.out", "w")  # noqa: SIM115
        mon = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "monitor",
                                f"127.0.0.1:{b.port}", "--record", str(rec)], cwd=REPO,
                               stdout=out, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while "monitor: subscribed" not in (tmp / "monitor.out").read_text():
                assert time.monotonic() < deadline and mon.poll() is None, "monitor not up"
                time.sleep(0.05)
            subprocess.run([sys.executable, "-m", "host_tools.harness",
                            str(tmp / "scenario.json"), "--out", str(tmp / "summary.json"),
                            "--mpy", "--broker", f"127.0.0.1:{b.port}", "--workdir",
                            str(tmp / "work")],
                           cwd=REPO, check=True, stdout=subprocess.DEVNULL, timeout=300)
            summary = json.loads((tmp / "summary.json").read_text())
            last = summary["mqtt"]["last_seq"]
            deadline = time.monotonic() + 20
            while _count(rec) < last and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            mon.send_signal(signal.SIGTERM)
            mon.communicate(timeout=20)
            out.close()
        assert mon.returncode == 0
    return rec, summary, sc


@pytest.fixture(scope="module")
def sim_record(tmp_path_factory):
    """A 20-minute run with a maintenance stop."""
    sc = json.loads((REPO / "scenarios" / "maintenance.json").read_text())
    # the last telemetry (every 10 s at x1.067 s) half a second before the stop, so the
    # record holds the node's final meter to within 0.43 s of heat
    sc.update(name="commissioning_short", duration_s=1201.5, events=[
        {"t_s": 450.4, "do": "input", "name": "maintenance", "value": True},
        {"t_s": 600, "do": "input", "name": "maintenance", "value": False}])
    return record_run(tmp_path_factory.mktemp("simrun"), sc)


def _count(rec):
    st = records.open_store(rec)
    try:
        return st.count()
    finally:
        st.close()


def test_report_of_a_simulated_run_matches_its_truth(sim_record, tmp_path):
    rec, summary, sc = sim_record
    r = run_report(rec, "--summary", _write(tmp_path / "summary.json", summary),
                   "--out", tmp_path / "report", "--no-pdf")
    assert r.returncode == 0, r.stderr
    for what in ("report:", "data:", "plot:"):
        assert what in r.stdout
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["truth_node"] == "sim/heatgw-sim"
    n = data["nodes"]["sim/heatgw-sim"]
    # heat: the node's own meter at its stop (to the mWh the payload prints and the heat of
    # the 0.43 s after the last record), and the plant's IF97 heat within the meter's class
    final = summary["metered"]["energy_kwh"]
    assert abs(n["heat"]["energy_kwh"] - final) < 0.001 + 100 * 0.5 / 3600, (n["heat"], final)
    plant = summary["plant"]["heat_delivered_kwh"]
    assert abs(n["heat"]["energy_kwh"] - plant) / plant * 100 < PLANT_TOLERANCE_PCT
    assert abs(n["heat"]["volume_m3"] - summary["plant"]["volume_m3"]) / \
        summary["plant"]["volume_m3"] < 0.01
    assert n["truth_check"]["record_ends_s_before_stop"] < 1.0
    assert not any(t.get("implied") for t in n["transitions"])  # one boot
    # transitions: every one the harness saw while the record ran, same time, state, reason
    end_s = n["span"]["duration_s"]
    want = [(round(t["t_s"], 3), t["state"], t["reason"])
            for t in summary["relay_transitions"] if t["t_s"] <= end_s]
    got = [(t["up_ms"] / 1000, t["state"], t["reason"]) for t in n["transitions"]]
    assert got == want and len(got) == 3, (got, want)
    # completeness: every seq the node published, none missing
    c = n["completeness"]
    assert (c["first_seq"], c["last_seq"], c["received"]) == (1, summary["mqtt"]["last_seq"],
                                                            summary["mqtt"]["last_seq"])
    assert c["percent"] == 100.0 and c["missing"] == [] and c["truth_percent"] == 100.0
    # alarms: the maintenance alarm held from the bypass until the key was turned back
    (m,) = [a for a in n["alarms"] if a["id"] == "maintenance"]
    assert m["raised_t_s"] == pytest.approx(451.067, abs=0.01)
    assert m["cleared_t_s"] == pytest.approx(600.067, abs=1.1)
    # the CO2 estimate: metered heat only, through the cited default factors
    f = co2.DEFAULT_FACTORS["fuel"]
    assert n["co2"]["avoided_kg"] == pytest.approx(
        n["heat"]["energy_kwh"] / f["boiler_efficiency"]["value"] *
        f["emission_factor"]["value"])
    assert n["co2"]["estimate"] is True and n["co2"]["net_kg"] is None  # no pump meter
    html = (tmp_path / "report" / "report.html").read_text()
    assert f"{n['heat']['energy_kwh']:,.3f} kWh" in html
    assert "DESNZ" in html and "gross" in html and "estimate" in html
    assert "ΔT and flow over time" not in html  # a plot's title is in the PNG, not the text
    for p in data["plots"]["sim/heatgw-sim"].values():
        assert (tmp_path / "report" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nreport: {n['heat']['energy_kwh']:.3f} kWh (node final {final:.3f}, plant "
          f"{plant:.3f}: {n['truth_check']['heat_vs_plant_pct']:+.3f} %), "
          f"{len(got)} transitions, {c['received']} records, 100 %")


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def test_completeness_of_a_record_with_records_taken_out(sim_record, tmp_path):
    rec, summary, _sc = sim_record
    cut = tmp_path / "cut.sqlite"
    shutil.copy(rec, cut)
    gone = [[20, 24], [50, 50], [90, 93]]
    db = sqlite3.connect(cut)
    for a, z in gone:
        db.execute("DELETE FROM records WHERE seq BETWEEN ? AND ?", (a, z))
    db.commit()
    db.close()
    r = run_report(cut, "--summary", _write(tmp_path / "s.json", summary), "--out",
                   tmp_path / "rep", "--no-pdf")
    assert r.returncode == 0, r.stderr
    c = json.loads((tmp_path / "rep" / "report.json").read_text())[
        "nodes"]["sim/heatgw-sim"]["completeness"]
    last = summary["mqtt"]["last_seq"]
    n_gone = sum(z - a + 1 for a, z in gone)
    assert c["missing"] == gone and c["missing_count"] == n_gone
    assert c["percent"] == pytest.approx(100.0 * (last - n_gone) / last)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "20–24, 50, 90–93" in html


def _record(path, docs, node="n1", site="s1"):
    st = records.open_store(path)
    for d in docs:
        kind = "event" if "kind" in d else "telemetry"
        item = records.classify(f"heatgw/{site}/{node}/{kind}", json.dumps(d).encode())
        st.add(item, 1.0)
    st.commit()
    return st


def _tel(seq, t_s, energy_wh, **extra):
    d = {"v": 1, "seq": seq, "boot": 1, "up_ms": int(t_s * 1000), "utc": 1_800_000_000 + int(t_s),
         "supply_c": 45.0, "supply_why": None, "return_c": 35.0, "return_why": None,
         "dt_k": 10.0, "dt_why": None, "flow_m3h": 5.0, "flow_why": None,
         "power_w": 58_000, "power_why": None, "energy_wh": energy_wh,
         "volume_l": 100.0 * seq, "time_s": t_s, "error_s": 0.0, "low_dt_s": 0.0,
         "state": "reuse", "relay_reuse": True, "reason": "recovered", "active": [],
         "latched": [], "heap_free": 40000}
    d.update(extra)
    return d


def test_ratio_pump_and_co2_from_the_fields_later_firmware_adds(tmp_path):
    """A record with the compute load's energy and the recovery ratio (heatgw.recovery)
    and a pump meter's readings (telemetry `meters`): known inputs, known results."""
    docs = []
    # compute: +10 kWh per record but one register reset (a fall adds nothing); ratio heat:
    # +8 kWh per record; pump energy register +0.5 kWh per record; 6 telemetry records
    ce = [100_000, 110_000, 120_000, 5_000, 15_000, 25_000]
    for i in range(6):
        docs.append(_tel(i + 1, 10.0 * i, 1000.0 + 9000.0 * i, compute_w=60_000,
                         compute_why=None, compute_energy_wh=float(ce[i]),
                         compute_energy_integrated=False, ratio_interval=0.8,
                         ratio_interval_why=None, ratio_hour=0.8, ratio_hour_why=None,
                         ratio_total=0.8, ratio_total_why=None,
                         ratio_heat_wh=50_000.0 + 8000.0 * i,
                         meters={"loop-pump": {"power_w": 1800.0, "energy_kwh": 10.0 + 0.5 * i,
                                               "fault": None},
                                 "compute": {"power_w": 60000.0, "energy_kwh": None,
                                             "fault": "timeout"}}))
    _record(tmp_path / "r.sqlite", docs).close()
    cfg = {"modbus": {"meters": {"loop-pump": {"bus": "b", "slave": 2, "role": "pump"},
                                 "compute": {"bus": "b", "slave": 1, "role": "compute"}}}}
    _write(tmp_path / "config.json", cfg)
    factors = json.loads(json.dumps(co2.DEFAULT_FACTORS))
    factors["name"] = "test set, net CV"
    factors["fuel"]["emission_factor"].update(value=0.20267, basis="net")
    factors["fuel"]["boiler_efficiency"].update(value=0.95, basis="net")
    _write(tmp_path / "f.json", factors)
    r = run_report(tmp_path / "r.sqlite", "--config", f"n1={tmp_path / 'config.json'}",
                   "--factors", tmp_path / "f.json", "--out", tmp_path / "rep", "--no-pdf")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    n = data["nodes"]["s1/n1"]
    assert n["heat"]["energy_kwh"] == pytest.approx(45.0)  # 5 x 9 kWh
    c = n["compute"]
    assert c["energy_kwh"] == pytest.approx(40.0) and c["meter_resets"] == 1  # 4 x 10 kWh
    assert c["ratio"] == pytest.approx(40.0 / 40.0) and c["estimate"] is False
    assert [h["ratio"] for h in c["hours"]] == [0.8]  # one hour shown, 50 s of it
    assert n["pump"]["energy_kwh"] == pytest.approx(2.5)  # 5 x 0.5 kWh, the register
    assert [m["meter"] for m in n["pump"]["meters"]] == ["loop-pump"]
    k = n["co2"]
    assert k["avoided_kg"] == pytest.approx(45.0 / 0.95 * 0.20267)
    assert k["pump_kg"] == pytest.approx(2.5 * 0.20707)
    assert k["net_kg"] == pytest.approx(k["avoided_kg"] - k["pump_kg"])
    assert k["fuel_factor"]["basis"] == k["boiler_efficiency"]["basis"] == "net"
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "test set, net CV" in html and "loop-pump" in html
    assert "Heat recovery ratio" in html and (tmp_path / "rep" / "s1_n1_ratio.png").exists()

    # the pump meter without an energy register: its power integrated, labelled an estimate;
    # the compute energy integrated by the node: the ratio labelled an estimate
    for d in docs:
        d["meters"]["loop-pump"]["energy_kwh"] = None
        d["compute_energy_integrated"] = True
    _record(tmp_path / "r2.sqlite", docs).close()
    r = run_report(tmp_path / "r2.sqlite", "--config", tmp_path / "config.json", "--out",
                   tmp_path / "rep2", "--no-pdf")
    assert r.returncode == 0, r.stderr
    n = json.loads((tmp_path / "rep2" / "report.json").read_text())["nodes"]["s1/n1"]
    assert n["pump"]["energy_kwh"] == pytest.approx(1800.0 * 50 / 3.6e6)
    assert n["pump"]["estimate"] is True and "estimate" in n["pump"]["meters"][0]["method"]
    assert n["compute"]["estimate"] is True
    assert "(est.)" in (tmp_path / "rep2" / "report.html").read_text()

    # without the node's configuration the pump meter's role is unknown: said, not guessed
    r = run_report(tmp_path / "r.sqlite", "--out", tmp_path / "rep3", "--no-pdf")
    n = json.loads((tmp_path / "rep3" / "report.json").read_text())["nodes"]["s1/n1"]
    assert n["pump"]["energy_kwh"] is None and "--config" in n["pump"]["note"]


def test_bad_factor_files_and_records_are_clear_errors(tmp_path):
    _record(tmp_path / "r.sqlite", [_tel(1, 0.0, 0.0), _tel(2, 10.0, 100.0)]).close()
    bad = json.loads(json.dumps(co2.DEFAULT_FACTORS))
    bad["fuel"]["boiler_efficiency"]["basis"] = "net"  # the EF is on gross CV
    cases = [(bad, "same basis")]
    nosrc = json.loads(json.dumps(co2.DEFAULT_FACTORS))
    nosrc["fuel"]["emission_factor"]["source"] = ""
    cases.append((nosrc, "fuel.emission_factor.source"))
    noyear = json.loads(json.dumps(co2.DEFAULT_FACTORS))
    del noyear["electricity"]["emission_factor"]["year"]
    cases.append((noyear, "electricity.emission_factor.year"))
    for doc, text in cases:
        r = run_report(tmp_path / "r.sqlite", "--factors", _write(tmp_path / "f.json", doc),
                       "--out", tmp_path / "x", "--no-pdf")
        assert r.returncode == 2 and text in r.stderr, (text, r.stderr)
    r = run_report(tmp_path / "none.sqlite")
    assert r.returncode == 2 and "no such record file" in r.stderr
    r = run_report("--print-factors")
    assert r.returncode == 0 and json.loads(r.stdout) == co2.DEFAULT_FACTORS
    # no Chromium: the HTML and the data all the same, and a note instead of the PDF
    r = run_report(tmp_path / "r.sqlite", "--out", tmp_path / "y",
                   env={"HEATGW_CHROMIUM": str(tmp_path / "no-chromium")})
    assert r.returncode == 0 and "PDF not written: Chromium is not installed" in r.stdout
    assert (tmp_path / "y" / "report.html").exists() and not (tmp_path / "y" /
                                                              "report.pdf").exists()


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _png_rows_differ(data):
    """The screenshot is no blank page: its decoded pixels are not all one value."""
    chunks, i = [], 8
    while i < len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        if data[i + 4:i + 8] == b"IDAT":
            chunks.append(data[i + 8:i + 8 + n])
        i += 12 + n
    raw = zlib.decompress(b"".join(chunks))
    return len(set(raw[:200_000])) > 10


def test_the_report_opens_in_headless_chromium_screenshot_and_pdf(sim_record, tmp_path):
    exe = chromium.find()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    rec, summary, _sc = sim_record
    out = tmp_path / "report"
    r = run_report(rec, "--summary", _write(tmp_path / "s.json", summary), "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"pdf:    {out / 'report.pdf'}" in r.stdout
    pdf = (out / "report.pdf").read_bytes()
    assert pdf[:5] == b"%PDF-" and pdf.count(b"/Type /Page") >= 2  # site + node sections
    shot = chromium.screenshot(exe, out / "report.html", tmp_path / "report-screenshot.png",
                               width=1200, height=3000)
    data = shot.read_bytes()
    assert _png_size(data) == (1200, 3000)
    assert _png_rows_differ(data)
    print(f"\nscreenshot: {shot}\npdf: {out / 'report.pdf'} ({len(pdf)} bytes)")


def test_the_complete_node_days_report_matches_the_days_truth(complete_node_day, tmp_path):
    """The complete-node day (tests/siteday.py), recorded by a real `heatgw monitor
    --record` (its `recorder` feature): the report's figures from report.json against the
    day's truth: the node's own final meter and the plant's IF97 heat, the heat recovery
    ratio against the plant's heat over the compute meter's true energy, every record the
    node published, the relay transitions the harness saw."""
    day = complete_node_day
    got = day.extra["recorder"]
    assert got["returncode"] == 0, got
    s = day.summary
    r = run_report(got["record"], "--summary", _write(tmp_path / "day.json", s), "--out",
                   tmp_path / "report", "--no-pdf")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    name = "/".join(day.base.split("/")[-2:])
    assert data["truth_node"] == name
    n = data["nodes"][name]
    c = n["completeness"]
    last = s["mqtt"]["last_seq"]
    assert (c["first_seq"], c["last_seq"], c["received"], c["missing"]) == (1, last, last, [])
    heat = n["heat"]["energy_kwh"]
    # the record ends at the last telemetry, at most one interval (10 s at <= 110 kW)
    # before the node's stop
    assert 0 <= s["metered"]["energy_kwh"] - heat <= 110 * 10 / 3600 + 0.001, (heat, s)
    plant = s["plant"]["heat_delivered_kwh"]
    assert abs(heat - plant) / plant * 100 < 0.5
    # the heat recovery ratio of each completed hour against the plant's IF97 heat over
    # the compute meter's true energy of the same span (the harness's hourly truth), and
    # over the record, the node's totals (what the node says since commissioning)
    hours = [h for h in (s.get("recovery") or {"hours": []})["hours"]
             if h["node_ratio"] is not None and h.get("true_ratio")]
    comp = n["compute"]
    if hours:
        assert len(comp["hours"]) == len(hours), (comp["hours"], hours)
        for mine, truth in zip(comp["hours"], hours, strict=True):
            assert mine["ratio"] == pytest.approx(truth["node_ratio"], abs=5e-5)
            assert abs(mine["ratio"] - truth["true_ratio"]) / truth["true_ratio"] < 0.005
        assert comp["ratio"] == pytest.approx(comp["node_ratio_total"], abs=5e-5)
        assert comp["estimate"] is False  # the SDM630's energy register
    end_s = n["span"]["duration_s"]
    want = [(round(t["t_s"], 3), t["state"], t["reason"])
            for t in s["relay_transitions"] if t["t_s"] <= end_s]
    assert [(t["up_ms"] / 1000, t["state"], t["reason"]) for t in n["transitions"]] == want
    print(f"\nday report: {heat:.3f} kWh (node {s['metered']['energy_kwh']:.3f}, plant "
          f"{plant:.3f}), ratio {comp and comp['ratio']} (hours "
          f"{[h['ratio'] for h in comp['hours']] if comp else None} against "
          f"{[round(h['true_ratio'], 4) for h in hours]}), {last} records, "
          f"{len(want)} transitions")


def test_a_power_cut_during_reuse_in_the_report(tmp_path):
    """A 1000 s run at 100 kW whose mains fails for 20 s while the heat is reused: the
    report's drop to bypass is placed at the new boot, after the last record of the old
    one, bracketing the moment the harness saw the coils drop; the meter's totals go on
    across the reboot (restored from the flash queue): the heat is the node's final meter."""
    sc = json.loads((REPO / "scenarios" / "power_cut_100kw.json").read_text())
    sc["config"].pop("mqtt")  # the harness's --broker gives it
    sc.update(name="cut_in_reuse", duration_s=1000, events=[  # reuse from 600 s on
        {"t_s": 700, "do": "power_cut", "off_s": 20}])
    rec, summary, _sc = record_run(tmp_path, sc)
    r = run_report(rec, "--summary", _write(tmp_path / "s.json", summary), "--out",
                   tmp_path / "rep", "--no-pdf")
    assert r.returncode == 0, r.stderr
    n = json.loads((tmp_path / "rep" / "report.json").read_text())["nodes"]["sim/heatgw-sim"]
    assert n["span"]["boots"] == [1, 2]
    cut = [t for t in summary["relay_transitions"] if t["reason"] == "power_cut"]
    assert len(cut) == 1 and cut[0]["t_s"] == 700.0, summary["relay_transitions"]
    (drop,) = [t for t in n["transitions"] if t.get("implied")]
    assert drop["state"] == "bypass" and drop["reason"] == "restart" and drop["boot"] == 2
    # bracketed: the old boot's last record at most one interval before, the new boot
    # after the 20 s off and the 1 s reset
    assert 700 - 10 <= drop["since_t_s"] <= 700 <= drop["t_s"] <= 700 + 20 + 1 + 0.5, drop
    before = [(t["t_s"], t["state"], t["reason"]) for t in summary["relay_transitions"]
              if t["t_s"] < 700]
    assert before  # reuse before the cut
    assert [(t["t_s"], t["state"], t["reason"]) for t in n["transitions"]
            if not t.get("implied")] == before
    h = n["heat"]
    assert h["meter_restarts"] == 0  # the totals never fell across the reboot
    assert 0 <= summary["metered"]["energy_kwh"] - h["energy_kwh"] <= 110 * 10 / 3600 + 1e-3
    c = n["completeness"]
    assert c["missing"] == [] and c["received"] == summary["mqtt"]["last_seq"]
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "the node restarted (boot 2)" in html
