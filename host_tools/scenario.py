"""Scenario files: loading, the node configuration they run, profiles over time.

A scenario is a JSON object (README, "Scenarios"); its `config` is merged into the
default node configuration, scenarios/default_config.json.
"""

import json
from pathlib import Path

from host_tools.paths import REPO

DEFAULT_CONFIG_PATH = REPO / "scenarios" / "default_config.json"


def default_config():
    """The node configuration every scenario starts from (a fresh copy)."""
    return json.loads(DEFAULT_CONFIG_PATH.read_text())


def deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def node_config(scenario):
    """The configuration the scenario's node gets: the default with its `config` merged."""
    return deep_merge(default_config(), scenario.get("config", {}))


class Profile:
    """Piecewise-linear profile from [[t_s, value], ...]; `repeat_s` makes it periodic."""

    def __init__(self, points, repeat_s=None):
        if isinstance(points, (int, float)):
            points = [[0, points]]
        self.points = sorted((float(t), float(v)) for t, v in points)
        self.repeat_s = repeat_s

    def __call__(self, t_s):
        if self.repeat_s:
            t_s %= self.repeat_s
        pts = self.points
        if t_s <= pts[0][0]:
            return pts[0][1]
        for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False):
            if t_s < t1:
                return v0 + (v1 - v0) * (t_s - t0) / (t1 - t0)
        return pts[-1][1]


def load_scenario(path):
    sc = json.loads(Path(path).read_text())
    if not isinstance(sc, dict) or "duration_s" not in sc:
        raise ValueError(f"{path}: a scenario is an object with at least duration_s")
    sc.setdefault("name", Path(path).stem)
    sc["events"] = expand_events(sc.get("events", []))
    return sc


def expand_events(events):
    """A `power_cut_series` event stands for `count` power cuts `every_s` apart, cycling
    through the lists `at_flash_op` (None: between writes) and `torn_bytes`."""
    out = []
    for ev in events:
        if ev.get("do") != "power_cut_series":
            out.append(ev)
            continue
        ops = ev.get("at_flash_op", [None])
        torn = ev.get("torn_bytes", [0])
        for i in range(int(ev["count"])):
            out.append({"t_s": ev["t_s"] + i * ev["every_s"], "do": "power_cut",
                        "off_s": ev.get("off_s", 2), "at_flash_op": ops[i % len(ops)],
                        "torn_bytes": torn[i % len(torn)]})
    return out
