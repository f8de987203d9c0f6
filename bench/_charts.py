"""PNG charts of the benchmarks' figures (``--chart PATH`` of each bench; ``docs/bench/*.png``).

One function per bench, each taking the figures that bench already computes. matplotlib (the
``bench`` extra: ``pip install -e '.[bench]'``) is imported inside the functions, with the Agg
backend, so the benches run without it; :func:`available` says whether a chart can be drawn.
A dashed line marks each target.
"""

from __future__ import annotations

import importlib.util
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MISSING = "no chart written: matplotlib is not installed (pip install -e '.[bench]')"
TARGET_STYLE: dict[str, Any] = {"linestyle": "--", "linewidth": 1.2}
COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def available() -> bool:
    """Whether matplotlib can be imported; if not, prints the one line saying how to install it."""
    if importlib.util.find_spec("matplotlib") is None:
        print(MISSING)
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    print(f"chart: {path}")


def _target(ax: Any, value: float, label: str, color: str = "black") -> None:
    """The dashed line of a target, with room above it."""
    ax.axhline(value, color=color, label=label, **TARGET_STYLE)
    if ax.get_ylim()[1] < value * 1.12:
        ax.set_ylim(top=value * 1.12)


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, median - min, max - median): a bar and its error bar."""
    middle = statistics.median(values)
    return middle, middle - min(values), max(values) - middle


def _bars(
    ax: Any,
    groups: Sequence[str],
    series: Mapping[str, Sequence[Sequence[float]]],
    *,
    fmt: str,
    colors: Sequence[str] = COLORS,
) -> None:
    """Grouped bars: for each series one bar per group at the median (its value written on top),
    whiskers to the min and max.

    ``series[name][i]`` holds the values of group ``i`` (empty: no bar).
    """
    width = 0.8 / max(1, len(series))
    for k, (name, per_group) in enumerate(series.items()):
        label: str | None = name  # in the legend once
        for i, values in enumerate(per_group):
            if not values:
                continue
            middle, low, high = _spread(values)
            x = i - 0.4 + width * (k + 0.5)
            ax.bar(
                x,
                middle,
                width * 0.9,
                color=colors[k % len(colors)],
                label=label,
                yerr=[[low], [high]] if len(values) > 1 else None,
                capsize=3,
            )
            label = None
            ax.annotate(
                format(middle, fmt),
                (x, middle),
                textcoords="offset points",
                xytext=(0, 2),
                ha="center",
                fontsize=8,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            )
    ax.set_xticks(range(len(groups)), groups)
    ax.margins(y=0.15)


# ---------------------------------------------------------------------------------------------
# one function per bench
# ---------------------------------------------------------------------------------------------


def invoke_overhead(
    path: Path,
    *,
    calls: int,
    latency_ratios: Mapping[str, Sequence[float]],
    medians_us: Mapping[str, tuple[float, float, float]],
    throughput_ratios: Mapping[str, Mapping[int, Sequence[float]]],
    client_latency_ratios: Mapping[str, Sequence[float]],
    client_throughput_ratios: Mapping[str, Mapping[int, Sequence[float]]],
) -> None:
    """Latency ratios (manager / raw session, manager / SDK ``Client``) per transport and
    throughput ratios per transport and callers.

    ``latency_ratios[transport]``: the ratio to the raw session, each run;
    ``client_latency_ratios[transport]``: to the SDK's ``Client``; ``medians_us[transport]``: the
    raw session's, ``Client``'s and the manager's median latency in microseconds (of the last
    run); ``throughput_ratios[transport][callers]`` and ``client_throughput_ratios``: calls/s
    through the manager over calls/s through the raw session (through ``Client``), each run.
    """
    plt = _pyplot()
    transports = list(latency_ratios)
    callers = sorted({c for per in throughput_ratios.values() for c in per})
    panels = 2 if callers else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.6), squeeze=False)
    runs = max(len(v) for v in latency_ratios.values())
    fig.suptitle(
        f"invoke_overhead: manager.call_tool vs the SDK's ClientSession and Client "
        f"({calls} calls per path, {runs} run{'s' if runs > 1 else ''})"
    )

    ax = axes[0][0]
    groups = [
        "{}\n(session {:.0f} us,\nClient {:.0f} us,\nmanager {:.0f} us)".format(t, *medians_us[t])
        for t in transports
    ]
    series = {
        "vs raw ClientSession": [latency_ratios[t] for t in transports],
        "vs SDK Client": [client_latency_ratios.get(t, ()) for t in transports],
    }
    _bars(ax, groups, series, fmt=".3f")
    _target(ax, 1.05, "target <= 1.05", color="#c44e52")
    ax.set_ylabel("median latency, manager / SDK path (x)")
    ax.set_title("latency, one caller (lower is better)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8)

    if callers:
        ax = axes[0][1]
        series = {}
        for c in callers:
            series[f"{c} callers vs session"] = [
                list(throughput_ratios.get(t, {}).get(c, ())) for t in transports
            ]
            series[f"{c} callers vs Client"] = [
                list(client_throughput_ratios.get(t, {}).get(c, ())) for t in transports
            ]
        _bars(ax, transports, series, fmt=".2f", colors=COLORS[1:])
        _target(ax, 0.95, "target >= 0.95", color="#c44e52")
        ax.set_ylabel("calls/s, manager / SDK path (x)")
        ax.set_title("throughput, concurrent callers (higher is better)")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=7)
    _save(fig, path)


def fleet_scale(
    path: Path, *, rows: Sequence[Mapping[str, Any]], interval: float, backends: str = "one backend"
) -> None:
    """Seconds to all healthy, CPU and memory per server against the number of servers.

    ``rows``: the results of ``bench/fleet_scale.py`` (keys ``servers``, ``opened_after``,
    ``healthy_after`` (None: never), ``cpu``, ``backend_cpu``, ``kib_per_server``), any number
    per fleet size; ``backends``: what served them, for the title.
    """
    plt = _pyplot()
    sizes = sorted({int(r["servers"]) for r in rows})

    def medians(key: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for n in sizes:
            values = [r[key] for r in rows if r["servers"] == n and r[key] is not None]
            if values:
                xs.append(n)
                ys.append(statistics.median(values))
        return xs, ys

    def scatter(ax: Any, key: str, color: str) -> None:
        points = [(r["servers"], r[key]) for r in rows if r[key] is not None]
        if len(points) > len(sizes):  # several runs per size: show each
            ax.scatter(*zip(*points, strict=True), s=12, color=color, alpha=0.5)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    fig.suptitle(f"fleet_scale: N streamable-HTTP servers, {backends}, health_interval={interval:g}s")
    panels: list[tuple[Any, list[tuple[str, str]], str, str, float, str, str]] = [
        (
            axes[0],
            [("healthy_after", "all healthy"), ("opened_after", "open_manager returned")],
            "seconds after entering open_manager",
            "time to healthy",
            5.0,
            "target 5 s",
            ".2f",
        ),
        (
            axes[1],
            [("cpu", "manager"), ("backend_cpu", "backend (beside it)")],
            "CPU, fraction of one core",
            "CPU in steady state",
            0.10,
            "target 0.10 core",
            ".3f",
        ),
        (
            axes[2],
            [("kib_per_server", "manager")],
            "KiB of RSS per server",
            "memory per server",
            64.0,
            "target 64 KiB",
            ".0f",
        ),
    ]
    for ax, keys, ylabel, title, goal, goal_label, fmt in panels:
        for k, (key, label) in enumerate(keys):
            color = COLORS[k] if k == 0 else "#999999"
            xs, ys = medians(key)
            ax.plot(xs, ys, marker="o", color=color, label=label)
            scatter(ax, key, color)
            if key == keys[0][0]:
                for x, y in zip(xs, ys, strict=True):
                    ax.annotate(format(y, fmt), (x, y), textcoords="offset points", xytext=(4, 5), fontsize=8)
        never = [r["servers"] for r in rows if r[keys[0][0]] is None]
        if never:
            ax.set_xlabel(f"servers (never healthy: N={', '.join(map(str, sorted(set(never))))})")
        _target(ax, goal, goal_label, color="#c44e52")
        if len(sizes) > 1 and sizes[-1] / sizes[0] >= 10:
            ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        if not never:
            ax.set_xlabel("servers (N)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.margins(y=0.12)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    _save(fig, path)


def http_api(
    path: Path,
    *,
    connection_counts: Sequence[int],
    rps: Mapping[str, Mapping[int, Sequence[float]]],
    ratios: Mapping[str, Mapping[int, Sequence[float]]],
    goals: Mapping[str, float],
    duration: float,
) -> None:
    """Requests/s per target and connection count, and trio-mcp serve's ratios to the others.

    ``rps[target label][connections]``: requests/s of each run; ``ratios[other label]
    [connections]``: trio-mcp serve's requests/s over the other's, paired run by run;
    ``goals[other label]``: the least ratio aimed at.
    """
    plt = _pyplot()
    groups = [f"{c} connections" for c in connection_counts]
    runs = max(len(v) for per in rps.values() for v in per.values())
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    fig.suptitle(
        f"http_api: POST /api/v1/mcp/invoke/tool (wrk, {runs} run{'s' if runs > 1 else ''} x {duration:g} s)"
    )

    ax = axes[0]
    series = {label: [list(per.get(c, ())) for c in connection_counts] for label, per in rps.items()}
    _bars(ax, groups, series, fmt=".0f")
    ax.set_ylabel("requests/s")
    ax.set_title("throughput per target (higher is better)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)

    ax = axes[1]
    labels = [label for label in goals if label in ratios]
    colors = [COLORS[list(rps).index(label)] if label in rps else COLORS[k] for k, label in enumerate(labels)]
    series = {
        f"trio-mcp serve / {label}": [list(ratios[label].get(c, ())) for c in connection_counts]
        for label in labels
    }
    _bars(ax, groups, series, fmt=".2f", colors=colors)
    for label, color in zip(labels, colors, strict=True):
        _target(ax, goals[label], f"target >= {goals[label]:g}x ({label})", color=color)
    ax.set_ylabel("requests/s ratio (x)")
    ax.set_title("trio-mcp serve against the others (higher is better)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    _save(fig, path)


def replicas(
    path: Path,
    *,
    spread: Mapping[str, Any] | None,
    hedge: Mapping[str, Any] | None,
) -> None:
    """Routing over replicas and hedged reads.

    ``spread`` (None: not run): ``p50_ms``, ``p99_ms`` and ``calls_per_s`` (routing -> value of
    each round; routings ``ordered`` and ``least_loaded``), ``throughput_ratio`` (least_loaded /
    ordered calls/s, each round), ``workers``, ``caption``;
    ``hedge`` (None: not run): ``percentiles_ms`` (arm -> {"p50": [...], "p95": [...],
    "p99": [...]}, values of each round), ``extra`` (arm -> extra requests per call, each round),
    ``caption``.
    """
    plt = _pyplot()
    panels = (2 if spread else 0) + (1 if hedge else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False)
    fig.suptitle("replicas: load-aware routing and hedged reads (real in-memory SDK servers, real time)")
    column = 0
    if spread:
        ax = axes[0][column]
        routings = list(spread["p50_ms"])
        series = {p: [spread[f"{p}_ms"][r] for r in routings] for p in ("p50", "p99")}
        _bars(ax, routings, series, fmt=".1f")
        ax.set_ylabel("latency, ms")
        ax.set_title(f"spread: latency by routing\n{spread['caption']}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)

        ax = axes[0][column + 1]
        _bars(ax, routings, {"calls/s": [spread["calls_per_s"][r] for r in routings]}, fmt=".0f")
        goal = 2.5 * statistics.median(spread["calls_per_s"]["ordered"])
        _target(ax, goal, f"target: 2.5x ordered ({goal:.0f} calls/s)", color="#c44e52")
        low, high = min(spread["throughput_ratio"]), max(spread["throughput_ratio"])
        ax.set_ylabel(f"calls/s ({spread['workers']} callers sharing the calls)")
        ax.set_title(
            f"spread: throughput by routing (higher is better)\nleast_loaded / ordered per round: "
            f"{low:.2f}-{high:.2f}x",
            fontsize=10,
        )
        ax.set_ylim(bottom=0)
        ax.legend(loc="best", fontsize=8)
        column += 2
    if hedge:
        ax = axes[0][column]
        arms = list(hedge["percentiles_ms"])
        groups = [
            f"{arm}\n(+{statistics.median(hedge['extra'][arm]):.1%} requests)" if k else arm
            for k, arm in enumerate(arms)
        ]
        series = {p: [hedge["percentiles_ms"][arm][p] for arm in arms] for p in ("p50", "p95", "p99")}
        _bars(ax, groups, series, fmt=".1f")
        ax.set_ylabel("latency, ms")
        ax.set_title(f"hedge: latency percentiles by hedge_after\n{hedge['caption']}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    _save(fig, path)
