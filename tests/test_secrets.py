"""firmware/heatgw/secrets.py: the secrets file, validated, saved atomically, never shown.

SCENARIO is MicroPython-compatible source: it runs in CPython in-process and again in the
real micropython binary, which must give the very same results. Every secret value used
is distinctive, and the tests look for it (and its hex) in every output.
"""

import json
import sys

import pytest

from host_tools.paths import FIRMWARE

sys.path.insert(0, str(FIRMWARE))

from heatgw import secrets  # noqa: E402

KEY_HEX = "5ec7e75ec7e7" + "a1" * 26
VALUES = {"command_key": KEY_HEX, "mqtt_password": "Pw-Zebra-8812",
          "wifi_ssid": "Ssid-Otter", "wifi_password": "Wifi-Walrus-77"}
SECRET_TEXTS = [KEY_HEX, KEY_HEX.upper(), "Pw-Zebra-8812", "Ssid-Otter", "Wifi-Walrus-77",
                "5ec7e7"]

SCENARIO = r"""
import json
import os
from heatgw import secrets

VALUES = __VALUES__


def attempt(fn):
    try:
        r = fn()
        return ["ok", str(r), repr(r)]
    except secrets.SecretsError as e:
        return ["error", str(e), e.errors]


def scn(d):
    out = {}
    p = d + "/secrets.json"
    out["missing"] = attempt(lambda: secrets.load(p))
    secrets.save(p, VALUES)
    out["files_after_save"] = sorted(f for f in os.listdir(d) if f.startswith("secrets"))
    s = secrets.load(p)
    out["repr"] = [repr(s), str(s), "%s %r" % (s, s), str(sorted(s.as_dict().items())),
                   str([s.get(k) for k in secrets.KEYS])]
    out["revealed"] = [s.get("command_key").reveal().hex(), s.get("mqtt_password").reveal(),
                       s.get("wifi_ssid").reveal(), s.get("wifi_password").reveal()]
    out["redact"] = s.redact("connect pw=%s key=%s KEY=%s ssid %s psk %s end" % (
        VALUES["mqtt_password"], VALUES["command_key"], VALUES["command_key"].upper(),
        VALUES["wifi_ssid"], VALUES["wifi_password"]))
    with open(p) as f:
        out["file"] = json.loads(f.read())
    # rotate one value: the others stay, a Secret is accepted as a value
    vals = s.as_dict()
    vals["command_key"] = bytes(range(32))
    vals["wifi_password"] = None
    vals["wifi_ssid"] = None
    secrets.save(p, vals)
    s2 = secrets.load(p)
    out["rotated"] = [s2.names(), s2.get("command_key").reveal().hex(),
                      s2.get("mqtt_password").reveal()]
    # bad values: SecretsError, nothing written
    with open(p) as f:
        before = f.read()
    bad = [{"command_key": VALUES["command_key"][:-1]},
           {"command_key": VALUES["command_key"][:-1] + "g"},
           {"command_key": bytes(31)}, {"mqtt_password": ""},
           {"mqtt_password": "x" * 129}, {"wifi_ssid": "s" * 33},
           {"wifi_ssid": "Ssid-Otter", "wifi_password": "Wifi-W"},
           {"wifi_password": "Wifi-Walrus-77"}, {"foo": "Pw-Zebra-8812"},
           {"mqtt_password": 8812}, {"version": 2}]
    out["bad_save"] = [attempt(lambda: secrets.save(p, b)) for b in bad]
    with open(p) as f:
        out["unchanged"] = f.read() == before
    out["ok_wifi"] = [attempt(lambda: secrets.from_dict(
        {"wifi_ssid": "Ssid-Otter", "wifi_password": pw})) for pw in ("", "a" * 64, "8chars!!")]
    # bad files
    files = {"not_json": b'{"mqtt_password": "Pw-Zebra-8812"',
             "not_object": b'["Pw-Zebra-8812"]',
             "not_utf8": b'{"mqtt_password": "Pw-Zebra-\xff"}',
             "big": b'{"mqtt_password": "' + b"P" * 1100 + b'"}',
             "bad_key": b'{"command_key": "5ec7e75ec7e7"}',
             "unknown": b'{"mqtt_pasword": "Pw-Zebra-8812"}'}
    out["bad_files"] = {}
    for name in sorted(files):
        with open(p, "wb") as f:
            f.write(files[name])
        out["bad_files"][name] = attempt(lambda: secrets.load(p))
    out["dir"] = attempt(lambda: secrets.load(d))
    return out
""".replace("__VALUES__", repr(VALUES))


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    ns = {"__name__": "secrets_scenario"}
    exec(SCENARIO, ns)
    d = tmp_path_factory.mktemp("sec_cp")
    return json.loads(json.dumps(ns["scn"](str(d))))


def _no_secret_in(text):
    for s in SECRET_TEXTS:
        assert s not in text, (s, text)


def test_missing_file_is_no_secrets(cp):
    assert cp["missing"][0] == "ok" and "none" in cp["missing"][1]


def test_save_is_atomic_and_leaves_no_temporary_file(cp):
    assert cp["files_after_save"] == ["secrets.json"]
    # written sealed (heatgw.seal): the seal member, then the values
    f = dict(cp["file"])
    assert len(f.pop("sha256")) == 64 and f == {**VALUES, "version": 1}


def test_values_never_print_but_can_be_revealed_at_use(cp):
    for text in cp["repr"]:
        _no_secret_in(text)
        assert "<secret>" in text or "<Secrets:" in text
    assert cp["repr"][0] == "<Secrets: command_key, mqtt_password, wifi_password, wifi_ssid>"
    assert cp["revealed"] == [KEY_HEX, VALUES["mqtt_password"], VALUES["wifi_ssid"],
                              VALUES["wifi_password"]]
    r = cp["redact"]
    _no_secret_in(r)
    assert r == ("connect pw=<secret> key=<secret> KEY=<secret> ssid <secret> "
                 "psk <secret> end")


def test_a_rotated_key_keeps_the_other_values(cp):
    assert cp["rotated"] == [["command_key", "mqtt_password"], bytes(range(32)).hex(),
                             VALUES["mqtt_password"]]


def test_bad_values_are_refused_clearly_naming_keys_never_values(cp):
    res = cp["bad_save"]
    assert all(r[0] == "error" for r in res), res
    for r in res:
        _no_secret_in(r[1])
        assert "Pw-Zebra" not in r[1] and "Walrus" not in r[1]
    msgs = [r[1] for r in res]
    assert "command_key: must be 64 hex digits" in msgs[0]
    assert "command_key: must be 64 hex digits" in msgs[1]
    assert "command_key: must be 64 hex digits" in msgs[2]
    assert "mqtt_password: must be a string of 1..128" in msgs[3]
    assert "mqtt_password: must be a string" in msgs[4]
    assert "wifi_ssid: must be a string of 1..32 bytes" in msgs[5]
    assert "wifi_password: must be 8..63 characters" in msgs[6]
    assert "wifi_password: needs wifi_ssid" in msgs[7]
    assert 'unknown key "foo"' in msgs[8]
    assert "mqtt_password" in msgs[9]
    assert "version: this firmware reads version 1" in msgs[10]
    assert cp["unchanged"] is True
    assert [r[0] for r in cp["ok_wifi"]] == ["ok", "ok", "ok"]


def test_bad_files_are_refused_without_quoting_them(cp):
    bf = cp["bad_files"]
    assert set(bf) == {"not_json", "not_object", "not_utf8", "big", "bad_key", "unknown"}
    for name, r in bf.items():
        assert r[0] == "error", name
        _no_secret_in(r[1])
        assert "Pw-Zebra" not in r[1], name
    assert bf["not_json"][1].endswith("secrets.json: not valid JSON")
    assert bf["not_utf8"][1].endswith("secrets.json: not valid JSON")
    assert "must be a JSON object" in bf["not_object"][1]
    assert "larger than 1024 bytes" in bf["big"][1]
    assert "command_key: must be 64 hex digits" in bf["bad_key"][1]
    assert 'unknown key "mqtt_pasword"' in bf["unknown"][1]  # the name, not its value
    assert cp["dir"][0] == "error" and "cannot be read" in cp["dir"][1]


def test_micropython_gives_the_same_results(mp, cp, tmp_path):
    d = tmp_path / "mp"
    d.mkdir()
    got = mp.run_json(SCENARIO + f"\nprint(json.dumps(scn({str(d)!r})))\n")[0]
    # the paths differ: compare with the directory replaced
    want = json.loads(json.dumps(cp))
    assert json.loads(json.dumps(got).replace(str(d), "D")) == json.loads(
        json.dumps(want).replace(cp["dir"][1].split(":")[0], "D"))


def test_json_refuses_a_secret_in_cpython():
    s = secrets.from_dict(VALUES)
    with pytest.raises(TypeError):
        json.dumps({"pw": s.get("mqtt_password")})
    with pytest.raises(TypeError):
        secrets.from_dict({"wifi_ssid": "x", "wifi_password": "Wifi-Walrus-77"}).get(
            "wifi_password") + "x"
