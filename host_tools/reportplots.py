"""The commissioning report's plots: PNG files made with matplotlib's Agg backend (no
display needed), one set per node from host_tools.reportdata's series.

    files = plot_node(series, out_dir, stem)   # {"temps": path, "dt_flow": ..., ...}
"""

import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

DPI = 110
SIZE = (9.0, 3.2)


def _x(series):
    """x values in hours since the record's first telemetry, and the axis label."""
    xs = [t / 3600.0 for t in series["t_s"]]
    if series["axis"] == "utc":
        start = datetime.datetime.fromtimestamp(series["t0"], datetime.UTC)
        return xs, f"hours since {start:%Y-%m-%d %H:%M:%S} UTC"
    return xs, "hours of node uptime since the record's first telemetry"


def _shade_reuse(ax, xs, reuse):
    """Heat reuse periods shaded green (the relay's state in each telemetry sample)."""
    start = None
    for i, on in enumerate(reuse + [False]):
        if on and start is None:
            start = xs[i]
        elif not on and start is not None:
            end = xs[i] if i < len(xs) else xs[-1]
            ax.axvspan(start, end, color="tab:green", alpha=0.08, lw=0)
            start = None


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_node(series, out_dir, stem):
    xs, xlabel = _x(series)
    reuse = series["reuse"]
    files = {}
    if len(xs) < 2:
        return files

    fig, ax = plt.subplots(figsize=SIZE)
    for key, label in (("supply_c", "supply"), ("return_c", "return"),
                       ("sink_return_c", "sink return"), ("it_coolant_c", "IT coolant")):
        if series["has_" + key]:
            ax.plot(xs, series[key], label=label, lw=1)
    _shade_reuse(ax, xs, reuse)
    ax.set_ylabel("°C")
    ax.set_xlabel(xlabel)
    ax.set_title("Temperatures (green: heat reuse)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    files["temps"] = _save(fig, out_dir / f"{stem}_temps.png")

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(SIZE[0], SIZE[1] * 1.5), sharex=True)
    a1.plot(xs, series["dt_k"], color="tab:red", lw=1)
    a1.set_ylabel("ΔT, K")
    a1.set_title("ΔT and flow over time (green: heat reuse)")
    a2.plot(xs, series["flow_m3h"], color="tab:blue", lw=1)
    a2.set_ylabel("flow, m³/h")
    a2.set_xlabel(xlabel)
    for a in (a1, a2):
        _shade_reuse(a, xs, reuse)
        a.grid(alpha=0.3)
    files["dt_flow"] = _save(fig, out_dir / f"{stem}_dt_flow.png")

    fig, ax = plt.subplots(figsize=SIZE)
    ax.plot(xs, [w / 1000.0 for w in series["power_w"]], label="thermal power (metered)",
            color="tab:red", lw=1)
    if series["has_compute_w"]:
        ax.plot(xs, [w / 1000.0 for w in series["compute_w"]],
                label="compute power (electric)", color="tab:purple", lw=1)
        title = "Thermal power against compute power"
    else:
        title = "Thermal power (no compute meter in this record)"
    _shade_reuse(ax, xs, reuse)
    ax.set_ylabel("kW")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    files["power"] = _save(fig, out_dir / f"{stem}_power.png")

    fig, ax = plt.subplots(figsize=SIZE)
    e0 = next((e for e in series["energy_wh"] if e == e), 0.0)  # first non-NaN
    ax.plot(xs, [(e - e0) / 1000.0 for e in series["energy_wh"]], color="tab:orange", lw=1.2)
    ax.set_ylabel("kWh")
    ax.set_xlabel(xlabel)
    ax.set_title("Heat delivered since the record's first telemetry (metered)")
    ax.grid(alpha=0.3)
    files["energy"] = _save(fig, out_dir / f"{stem}_energy.png")

    if series["has_ratio_interval"] or series["has_ratio_hour"]:
        fig, ax = plt.subplots(figsize=SIZE)
        if series["has_ratio_interval"]:
            ax.plot(xs, series["ratio_interval"], ".", ms=2, label="per telemetry interval",
                    color="tab:gray")
        if series["has_ratio_hour"]:
            ax.plot(xs, series["ratio_hour"], label="last completed hour", color="tab:green")
        ax.set_ylabel("heat / electricity")
        ax.set_xlabel(xlabel)
        ax.set_title("Heat recovery ratio")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        files["ratio"] = _save(fig, out_dir / f"{stem}_ratio.png")
    return files
