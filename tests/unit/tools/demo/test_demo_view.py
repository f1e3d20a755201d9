"""The demo's live view: counting results against the simulator's ground truth."""

from __future__ import annotations

from fakes import make_result
from rich.console import Console

from inspector.messages import Defect, ResultMessage
from inspector.tools.demo.view import LineTally, render


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _result(frame_id: str, camera: str, anomalous: bool, total_ms: float = 10.0) -> ResultMessage:
    defects = (
        [Defect(bbox=(1, 2, 3, 4), area_px=12, max_score=0.9, mean_score=0.7, centroid=(2, 4))]
        if anomalous
        else []
    )
    return make_result(frame_id, camera, anomalous=anomalous, defects=defects, total_ms=total_ms)


TRUTH = {"f1": "good", "f2": "scratch", "f3": "crack", "f4": "good"}


def test_counts_catches_misses_and_false_alarms() -> None:
    tally = LineTally(truth=TRUTH.get)
    tally.add_result(_result("f1", "a", anomalous=False))  # good, passed
    tally.add_result(_result("f2", "a", anomalous=True))  # caught
    tally.add_result(_result("f3", "b", anomalous=False))  # missed
    tally.add_result(_result("f4", "b", anomalous=True))  # false alarm
    tally.add_result(_result("f9", "b", anomalous=True))  # unknown truth: counted, not judged
    tally.add_dead_letter("cannot decode image")
    assert (tally.results, tally.anomalous, tally.defects) == (5, 3, 3)
    assert (tally.caught, tally.missed, tally.false_alarms) == (1, 1, 1)
    assert tally.total == 6
    assert tally.dead_letters == 1 and tally.last_dead_letter == "cannot decode image"
    assert tally.cameras["a"].frames == 2 and tally.cameras["a"].anomalous == 1
    assert tally.cameras["b"].frames == 3 and tally.cameras["b"].anomalous == 2
    assert [f.frame_id for f in tally.flagged] == ["f9", "f4", "f2"]
    assert tally.flagged[2].truth == "scratch" and tally.flagged[2].bbox == (1, 2, 3, 4)


def test_rate_uses_recent_arrivals_only() -> None:
    clock = FakeClock()
    tally = LineTally(clock=clock)
    for i in range(11):
        clock.now = 100.0 + i * 0.1
        tally.add_result(_result(f"f{i}", "a", anomalous=False))
    assert abs(tally.frames_per_s() - 11.0) < 1e-6  # 11 results in the first second
    clock.now += 4.0  # the window is 5 s: the same 11 results over it
    assert abs(tally.frames_per_s() - 11 / 5) < 1e-6
    clock.now += 60.0
    assert tally.frames_per_s() == 0.0


def test_latency_percentiles() -> None:
    tally = LineTally()
    assert tally.latency_ms(50) is None
    for i in range(1, 101):
        tally.add_result(_result(f"f{i}", "a", anomalous=False, total_ms=float(i)))
    assert tally.latency_ms(50) == 50.5
    p95 = tally.latency_ms(95)
    assert p95 is not None and 94 < p95 < 97
    assert "daemon p50/p95 50/95 ms, capture→verdict p50/p95 -" in tally.summary()


def test_capture_to_verdict_is_shown_beside_the_daemons_own_latency() -> None:
    tally = LineTally()
    for i in range(1, 101):
        # The frame waited 1 s before the daemon took it (e.g. in the topic, before the
        # consumer owned its partitions); the daemon itself took i ms.
        result = _result(f"f{i}", "a", anomalous=False, total_ms=float(i)).model_copy(
            update={
                "captured_at": "2025-01-01T00:00:00+00:00",
                "processed_at": f"2025-01-01T00:00:01.{i:03d}+00:00",
            }
        )
        tally.add_result(result)
    tally.add_result(_result("no-capture-time", "a", anomalous=False, total_ms=50.0))
    assert tally.capture_to_verdict_ms(50) == 1050.5
    assert tally.latency_ms(50) == 50.0
    assert "daemon p50/p95 50/95 ms, capture→verdict p50/p95 1050/1095 ms" in tally.summary()
    console = Console(record=True, width=80, height=24)
    console.print(render(tally, "demo", height=24))
    text = console.export_text()
    assert "daemon p50/p95 50/95 ms" in text and "capture→verdict p50/p95 1050/1095 ms" in text


def test_render_shows_cameras_and_flagged_frames() -> None:
    tally = LineTally(truth=TRUTH.get)
    tally.add_result(_result("f2", "line1-cam1", anomalous=True))
    tally.add_dead_letter("truncated JPEG")
    console = Console(record=True, width=120)
    console.print(render(tally, "demo header"))
    text = console.export_text()
    for expected in ("demo header", "line1-cam1", "f2", "scratch", "1,2,3,4", "truncated JPEG"):
        assert expected in text


def test_the_view_fits_an_80_by_24_terminal() -> None:
    tally = LineTally(truth=TRUTH.get)
    for i in range(20):
        camera = f"line1-station-{i % 5}-camera-with-a-long-name"
        tally.add_result(
            _result(f"frame-{i:05d}-with-a-long-id-{'x' * 40}", camera, anomalous=True)
        )
    tally.add_dead_letter("truncated JPEG (31337 bytes, no end-of-image marker)\\n" + "y" * 200)
    console = Console(record=True, width=80, height=24)
    console.print(render(tally, "inspector demo: 5 cameras on 127.0.0.1:9092", height=24))
    lines = console.export_text().splitlines()
    assert len(lines) <= 24, "\\n".join(lines)
    assert all(len(line) <= 80 for line in lines)
    text = "\\n".join(lines)
    assert "…" in text  # long ids and the reason end in an ellipsis instead of wrapping
    assert "truncated JPEG" in text and "y" * 100 not in text


def test_the_view_shows_when_the_line_falls_behind() -> None:
    sent = [4]
    tally = LineTally(sent=lambda: sent[0])
    tally.add_result(_result("f1", "a", anomalous=False).model_copy(update={"late": False}))
    tally.add_result(_result("f2", "a", anomalous=False).model_copy(update={"late": False}))
    tally.add_result(_result("f3", "b", anomalous=False))  # no deadline: not in the share
    assert (tally.behind(), tally.late, tally.late_share()) == (1, 0, 0.0)
    console = Console(record=True, width=100)
    console.print(render(tally, "demo"))
    assert "keeping up" in console.export_text()

    sent[0] = 200  # the cameras ran ahead; verdicts now come after the deadline
    tally.add_result(_result("f4", "a", anomalous=False).model_copy(update={"late": True}))
    assert (tally.behind(), tally.late, tally.late_share()) == (196, 1, 1 / 3)
    console = Console(record=True, width=100)
    console.print(render(tally, "demo"))
    text = console.export_text()
    assert "FALLING BEHIND" in text and "196" in text and "33%" in text
    assert "196 frames behind, 1 late (33%)" in tally.summary()


def test_without_a_sent_count_or_deadlines_the_view_says_unknown() -> None:
    tally = LineTally()
    tally.add_result(_result("f1", "a", anomalous=False))
    assert tally.behind() is None and tally.late_share() is None
    assert "behind" not in tally.summary() and " late (" not in tally.summary()


def test_the_summary_has_no_empty_parts_before_the_first_result() -> None:
    tally = LineTally(sent=lambda: 30)
    tally.add_dead_letter("broken")
    assert tally.summary().endswith("1 dead letters; 29 frames behind")


def test_a_featured_camera_has_its_own_line_and_the_totals_count_every_camera() -> None:
    truth = {"h1": "scratch", "h2": "spot", "h3": "good", "c1": "good", "c2": "crack"}
    tally = LineTally(truth=truth.get, featured={"line1-hires": "1024x768, 63 tiles/frame"})
    assert tally.featured_lines() == [
        "line1-hires (1024x768, 63 tiles/frame): 0 frames, caught 0 of 0 defective, 0 false alarms"
    ]

    def hires(frame_id: str, anomalous: bool, inference_ms: float) -> ResultMessage:
        result = _result(frame_id, "line1-hires", anomalous)
        latency = result.latency_ms.model_copy(update={"inference": inference_ms})
        return result.model_copy(update={"latency_ms": latency})

    tally.add_result(hires("h1", anomalous=True, inference_ms=2000.0))  # caught
    tally.add_result(hires("h2", anomalous=False, inference_ms=2400.0))  # missed
    tally.add_result(hires("h3", anomalous=True, inference_ms=3000.0))  # false alarm
    tally.add_result(_result("c1", "line1-cam1", anomalous=True))  # false alarm elsewhere
    tally.add_result(_result("c2", "line1-cam1", anomalous=True))  # caught elsewhere
    line = (
        "line1-hires (1024x768, 63 tiles/frame): 3 frames, caught 1 of 2 defective, "
        "1 false alarms, inference p50 2400 ms"
    )
    assert tally.featured_lines() == [line]
    assert (tally.caught, tally.missed, tally.false_alarms) == (2, 1, 2)  # every camera
    assert tally.summary().endswith("; " + line)
    console = Console(record=True, width=120)
    console.print(render(tally, "demo"))
    assert line in console.export_text()


def test_the_view_with_a_featured_camera_still_fits_80_by_24() -> None:
    tally = LineTally(truth=TRUTH.get, featured={"line1-hires": "1024x768, 63 tiles/frame"})
    for i in range(20):
        tally.add_result(_result(f"frame-{i:05d}", f"line1-cam{i % 5}", anomalous=True))
    console = Console(record=True, width=80, height=24)
    console.print(render(tally, "inspector demo", height=24))
    lines = console.export_text().splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert any("line1-hires (1024x768" in line for line in lines)
