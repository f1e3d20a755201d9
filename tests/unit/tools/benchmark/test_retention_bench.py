"""``bench/retention.py``'s figures: a window's rate, CPU and latency, and the on/off summary.

Speed is never asserted (the benchmark measures it): these check the arithmetic on made-up
results and CPU samples, and that a window's daemon configuration is the demo's line with
retention switched on or off.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inspector.errors import InspectorError
from inspector.runtime.config import explicit_config
from inspector.tools.benchmark.retention_figures import (
    MAX_COST,
    RateName,
    Window,
    interpolate,
    summarise,
    window_figures,
)
from inspector.tools.benchmark.retention_windows import (
    Prepared,
    Settings,
    demo_line,
    window_config,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _result(processed_s: float, total_ms: float, anomalous: bool) -> str:
    """A JSON-lines result with only the fields the figures read."""
    return json.dumps(
        {
            "processed_at": (T0 + timedelta(seconds=processed_s)).isoformat(),
            "latency_ms": {"total": total_ms},
            "is_anomalous": anomalous,
        }
    )


def test_interpolation_is_linear_between_samples_and_clamped_outside() -> None:
    samples = [[10.0, 1.0, 0.0], [12.0, 2.0, 0.5], [14.0, 6.0, 0.5]]
    assert interpolate(samples, 11.0, 1) == pytest.approx(1.5)
    assert interpolate(samples, 13.5, 1) == pytest.approx(5.0)
    assert interpolate(samples, 12.0, 2) == pytest.approx(0.5)
    assert interpolate(samples, 5.0, 1) == 1.0 and interpolate(samples, 99.0, 1) == 6.0


def test_a_windows_rate_and_cpu_span_from_the_first_read_to_the_last_result() -> None:
    # Four results: the first read 0.5 s before its verdict at 1 s, the last verdict at 3 s.
    lines = [
        _result(1.0, 500.0, True),
        _result(2.0, 300.0, False),
        _result(2.5, 400.0, False),
        _result(3.0, 200.0, False),
    ]
    start = (T0 + timedelta(seconds=0.5)).timestamp()
    # CPU grows 1 s per wall second from the first read on: 2.5 s over the 2.5 s span.
    cpu = [[start - 10, 0.0, 0.0], [start, 8.0, 0.0], [start + 2.5, 10.5, 0.1]]
    report = {
        "cpu": cpu,
        "retention": {
            "retained": {"flagged": 1.0, "sampled": 0.0},
            "dropped": {"queue_full": 0.0, "full": 2.0},
            "bytes": 1234.0,
        },
    }
    window = window_figures("saturation", True, lines, report, process_s=20.0)
    assert window.seconds == pytest.approx(2.5)
    assert window.results_per_s == pytest.approx(4 / 2.5)
    assert window.cpu_ms_per_result == pytest.approx(1000 * 2.5 / 4)  # loading left out
    assert window.writer_cpu_ms_per_result == pytest.approx(1000 * 0.1 / 4)
    assert window.latency_p50_ms == pytest.approx(350.0)
    assert window.flagged_share == 0.25
    assert window.retained == {"flagged": 1.0, "sampled": 0.0}
    assert window.dropped == {"full": 2.0}  # reasons that never happened are left out
    with pytest.raises(InspectorError):
        window_figures("demo", False, [], report, process_s=1.0)


def _window(rate: RateName, on: bool, per_s: float, cpu_ms: float) -> Window:
    return Window(
        rate=rate,
        retention=on,
        results=100,
        seconds=100 / per_s,
        results_per_s=per_s,
        cpu_ms_per_result=cpu_ms,
        writer_cpu_ms_per_result=2.0 if on else 0.0,
        latency_p50_ms=100.0,
        latency_p95_ms=200.0,
        flagged_share=0.25,
        retained={"flagged": 25.0, "sampled": 1.0} if on else {},
        dropped={},
        retention_bytes=0.0,
        process_s=10.0,
    )


def test_the_cost_is_one_less_the_ratio_of_the_medians_and_meets_its_rates_target() -> None:
    windows = [
        _window("saturation", False, 40.0, 50.0),
        _window("saturation", True, 38.0, 52.0),
        _window("saturation", False, 44.0, 48.0),
        _window("saturation", True, 36.0, 56.0),
        _window("saturation", False, 42.0, 49.0),
        _window("saturation", True, 37.0, 54.0),
        _window("demo", False, 10.0, 60.0),
        _window("demo", True, 9.0, 70.0),
    ]
    saturation = summarise(windows, "saturation")
    assert saturation["median"]["off"]["results_per_s"] == 42.0
    assert saturation["median"]["on"]["results_per_s"] == 37.0
    assert saturation["cost"] == pytest.approx(1 - 37 / 42)
    assert saturation["cpu_cost"] == pytest.approx(54 / 49 - 1)
    assert saturation["pair_ratios_results_per_s"] == pytest.approx([38 / 40, 36 / 44, 37 / 42])
    assert saturation["target"]["max_cost"] == MAX_COST["saturation"] == 0.10
    assert saturation["target"]["met"] is False  # 11.9 % over 10 %
    assert len(saturation["windows"]) == 6
    demo = summarise(windows, "demo")
    assert demo["cost"] == pytest.approx(0.1) and demo["target"]["met"] is False
    with pytest.raises(InspectorError):
        summarise([_window("demo", False, 10.0, 60.0)], "demo")  # no window with it on


def test_a_window_runs_the_demos_line_with_retention_on_or_off(tmp_path: Path) -> None:
    demo, daemon = demo_line()
    settings = Settings(
        pairs=1,
        demo_frames=41,  # not a multiple of the cameras: rounded down to one
        saturation_frames=80,
        cameras=demo.cameras,
        fps_per_camera=demo.fps / demo.cameras,
        max_bytes=123_456_789,
        daemon=daemon,
        work=tmp_path,
    )
    assert settings.frames("demo") == 40 and settings.frames("saturation") == 80
    cameras = [(f"line1-cam{i + 1}", tmp_path / f"cam{i + 1}") for i in range(demo.cameras)]
    prepared = Prepared({"demo": cameras, "saturation": cameras}, tmp_path / "m.safetensors")
    on = explicit_config(window_config(settings, prepared, "demo", True, tmp_path / "w1"))
    assert [s.fps for s in on.sources] == [demo.fps / demo.cameras] * demo.cameras  # type: ignore[union-attr]
    assert on.retention.enabled and on.retention.path == tmp_path / "w1" / "retained"
    assert (on.retention.good_sample_rate, on.retention.max_bytes) == (0.01, 123_456_789)
    assert on.batcher.max_batch_size == daemon["batcher"]["max_batch_size"]
    assert on.sinks.jsonl.path == tmp_path / "w1" / "results.jsonl"
    assert not on.sinks.kafka.enabled
    off = explicit_config(window_config(settings, prepared, "saturation", False, tmp_path / "w2"))
    assert not off.retention.enabled
    assert [s.fps for s in off.sources] == [None] * demo.cameras  # type: ignore[union-attr]
