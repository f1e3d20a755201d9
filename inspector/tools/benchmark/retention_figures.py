"""The figures of ``bench/retention.py``: one window's, and a rate's retention on vs off.

Pure: from a window's JSON-lines results and its process's report
(:mod:`inspector.tools.benchmark.retention_process`) to :class:`Window`, and from windows to
medians, ratios, the cost and its target (:func:`summarise`). How windows are run is
:mod:`inspector.tools.benchmark.retention_windows`.
"""

from __future__ import annotations

import bisect
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from inspector.errors import InspectorError

RateName = Literal["demo", "saturation"]
#: Most that retention may cost, as a share of results/s with retention off, per rate.
MAX_COST: dict[RateName, float] = {"demo": 0.05, "saturation": 0.10}
TARGET = "retention costs under 5 % of results/s at the demo's rate and under 10 % at saturation"
#: Share of the offered rate that paced windows without retention must reach to have kept it
#: (a window's span ends with the last frame's latency, so a kept pace reads a little off it).
PACE_KEPT = 0.9


@dataclass(frozen=True)
class Window:
    """One window's figures.

    Attributes:
        rate: ``demo`` or ``saturation``.
        retention: Whether retention was on.
        results: Results delivered (every frame).
        seconds: From the first frame's read to the last result.
        results_per_s: ``results / seconds``.
        cpu_ms_per_result: The daemon process's CPU time over that span, per result.
        writer_cpu_ms_per_result: The retention writer thread's CPU time, per result.
        latency_p50_ms: Median ``latency_ms.total`` (read to verdict).
        latency_p95_ms: Its 95th percentile.
        flagged_share: Share of results flagged anomalous.
        retained: Retained frames by kind (``flagged``, ``sampled``).
        dropped: Retained copies dropped, by reason.
        retention_bytes: What the retention folder held at the end.
        process_s: The window's process from start to end (loading and warm-up included).
    """

    rate: RateName
    retention: bool
    results: int
    seconds: float
    results_per_s: float
    cpu_ms_per_result: float
    writer_cpu_ms_per_result: float
    latency_p50_ms: float
    latency_p95_ms: float
    flagged_share: float
    retained: dict[str, float]
    dropped: dict[str, float]
    retention_bytes: float
    process_s: float


def interpolate(samples: Sequence[Sequence[float]], at: float, column: int) -> float:
    """``samples[.][column]`` at wall time ``at``, linear between samples (``[.][0]``: wall).

    Clamped to the first and last sample outside them.
    """
    walls = [s[0] for s in samples]
    i = bisect.bisect_right(walls, at)
    if i == 0:
        return float(samples[0][column])
    if i == len(samples):
        return float(samples[-1][column])
    (w0, *row0), (w1, *row1) = samples[i - 1], samples[i]
    v0, v1 = row0[column - 1], row1[column - 1]
    return float(v0 + (v1 - v0) * (at - w0) / (w1 - w0) if w1 > w0 else v1)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def window_figures(
    rate: RateName,
    retention: bool,
    lines: Sequence[str],
    report: dict[str, Any],
    process_s: float,
) -> Window:
    """A window's figures from its JSON-lines results and its process's report.

    Raises:
        InspectorError: No results, or no CPU samples.
    """
    if not lines or not report.get("cpu"):
        raise InspectorError(f"bench: a {rate} window came back without results or CPU samples")
    starts: list[datetime] = []
    ends: list[datetime] = []
    latencies: list[float] = []
    flagged = 0
    for line in lines:
        message = json.loads(line)
        end = datetime.fromisoformat(message["processed_at"])
        total = float(message["latency_ms"]["total"])
        # latency_ms.total counts from before the frame's read and decode.
        starts.append(end - timedelta(milliseconds=total))
        ends.append(end)
        latencies.append(total)
        flagged += bool(message["is_anomalous"])
    begin, finish = min(starts).timestamp(), max(ends).timestamp()
    samples = report["cpu"]
    cpu_s = interpolate(samples, finish, 1) - interpolate(samples, begin, 1)
    writer_s = float(samples[-1][2])
    n = len(lines)
    kept = report.get("retention", {})
    return Window(
        rate=rate,
        retention=retention,
        results=n,
        seconds=finish - begin,
        results_per_s=n / (finish - begin),
        cpu_ms_per_result=1000 * cpu_s / n,
        writer_cpu_ms_per_result=1000 * writer_s / n,
        latency_p50_ms=_percentile(latencies, 50),
        latency_p95_ms=_percentile(latencies, 95),
        flagged_share=flagged / n,
        retained=dict(kept.get("retained", {})),
        dropped={k: v for k, v in kept.get("dropped", {}).items() if v},
        retention_bytes=float(kept.get("bytes", 0.0)),
        process_s=process_s,
    )


#: The figures compared between retention on and off.
COMPARED = ("results_per_s", "cpu_ms_per_result", "latency_p50_ms", "latency_p95_ms")


def summarise(windows: Sequence[Window], rate: RateName) -> dict[str, Any]:
    """One rate's medians per condition, the on/off ratios, the cost and its target.

    The cost is ``1 - median results/s on / median results/s off``; ``cpu_cost`` is
    ``median CPU per result on / off - 1``, what retention takes of the machine.
    """
    mine = [w for w in windows if w.rate == rate]
    by = {c: [w for w in mine if w.retention == (c == "on")] for c in ("off", "on")}
    if not by["off"] or not by["on"]:
        raise InspectorError(f"bench: the {rate} rate needs windows with retention off and on")
    medians = {
        c: {k: statistics.median(getattr(w, k) for w in ws) for k in COMPARED}
        for c, ws in by.items()
    }
    ratios = {k: medians["on"][k] / medians["off"][k] for k in COMPARED}
    pairs = [
        on.results_per_s / off.results_per_s for off, on in zip(by["off"], by["on"], strict=False)
    ]
    cost = 1 - ratios["results_per_s"]
    cpu_cost = ratios["cpu_ms_per_result"] - 1
    return {
        "windows": [asdict(w) for w in mine],
        "median": medians,
        "ratio_on_off": ratios,
        "pair_ratios_results_per_s": pairs,
        "flagged_share": statistics.fmean(w.flagged_share for w in mine),
        "cost": cost,
        "cpu_cost": cpu_cost,
        "target": {
            "max_cost": MAX_COST[rate],
            "met": cost < MAX_COST[rate],
            "basis": "cost = 1 - median results/s with retention on / off",
            "cpu_within_max_cost": cpu_cost < MAX_COST[rate],
        },
    }


__all__ = [
    "COMPARED",
    "MAX_COST",
    "PACE_KEPT",
    "TARGET",
    "RateName",
    "Window",
    "interpolate",
    "summarise",
    "window_figures",
]
