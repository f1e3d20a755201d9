from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from fakes import (
    UNIT_CALIBRATION,
    FakeSink,
    FakeSource,
    make_dead_letter,
    make_frame,
    small_models,
)
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.errors import RecordRefusedError
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import BatcherConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.records import DeadLetter, Frame, RawMessage

CAL = UNIT_CALIBRATION


@pytest.fixture(scope="module")
def model() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()


def _pipeline(
    model: ReverseDistillation,
    sources: list[FakeSource],
    sinks: list[FakeSink],
    registry: CollectorRegistry,
    recipes: Recipes | None = None,
    **kwargs: float,
) -> Pipeline:
    metrics = Metrics(registry)
    models = small_models(model, metrics)
    batcher = BatcherConfig(max_batch_size=4, max_wait_ms=5, queue_size=int(kwargs.pop("queue", 8)))
    return Pipeline(sources, batcher, models, sinks, metrics, recipes=recipes, **kwargs)


def _frames(n: int, acks: list[str], camera: str = "cam") -> list[Frame]:
    rng = np.random.default_rng(0)
    return [
        make_frame(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), f"{camera}-{i}", camera, acks)
        for i in range(n)
    ]


def _run(pipeline: Pipeline, timeout: float = 60.0) -> None:
    pipeline.start()
    wait_until(lambda: pipeline.finished, timeout, "the pipeline to finish")
    pipeline.close()


def test_every_frame_and_dead_letter_is_delivered_and_acked(model: ReverseDistillation) -> None:
    acks: list[str] = []
    items = [*_frames(9, acks), make_dead_letter("garbage", acks, "dl-1")]
    source, sink, registry = FakeSource(items), FakeSink(), CollectorRegistry()
    _run(_pipeline(model, [source], [sink], registry))
    assert sorted(acks) == sorted([f"cam-{i}" for i in range(9)] + ["dl-1"])
    assert len(sink.results) == 9 and len(sink.dead_letters) == 1
    assert {r.message.image_size for r in sink.results} == {(48, 80)}
    assert registry.get_sample_value("inspector_frames_processed_total", {"camera": "cam"}) == 9
    assert registry.get_sample_value("inspector_end_to_end_seconds_count") == 9
    assert registry.get_sample_value("inspector_anomaly_score_count", {"camera": "cam"}) == 9
    assert source.final_committed and source.closed


def test_two_sources_share_the_model(model: ReverseDistillation) -> None:
    acks: list[str] = []
    sources = [FakeSource(_frames(5, acks, "a")), FakeSource(_frames(6, acks, "b"))]
    sink = FakeSink()
    _run(_pipeline(model, sources, [sink], CollectorRegistry()))
    assert sorted(r.message.camera_id for r in sink.results) == ["a"] * 5 + ["b"] * 6


def test_slow_sink_pushes_back_to_the_source(model: ReverseDistillation) -> None:
    acks: list[str] = []
    source = FakeSource(_frames(24, acks), per_poll=8)
    sink = FakeSink(delay_s=0.3)
    _run(_pipeline(model, [source], [sink], CollectorRegistry(), max_in_flight=4, queue=2))
    assert len(acks) == 24
    assert sink.max_outstanding <= 4  # memory bounded by the in-flight limit
    assert source.pause_calls >= 1  # the source was paused instead of buffering


def test_a_failing_sink_gets_the_result_again_until_it_takes_it(
    model: ReverseDistillation,
) -> None:
    acks: list[str] = []
    registry = CollectorRegistry()
    good = FakeSink()
    flaky = FakeSink(fail_with=OSError("broker gone"), failures=4, name="flaky")
    _run(_pipeline(model, [FakeSource(_frames(3, acks))], [good, flaky], registry))
    assert sorted(acks) == ["cam-0", "cam-1", "cam-2"]  # nothing forgotten
    # The sink that took each result at once is not asked again: no duplicates there.
    assert sorted(r.message.frame_id for r in good.results) == ["cam-0", "cam-1", "cam-2"]
    assert flaky.publishes == 3 + 4
    retries = registry.get_sample_value("inspector_delivery_retries_total", {"kind": "result"})
    assert retries == 4


def test_a_sink_that_never_recovers_leaves_frames_uncommitted_and_unready(
    model: ReverseDistillation,
) -> None:
    acks: list[str] = []
    registry = CollectorRegistry()
    broken = FakeSink(fail_with=OSError("broker gone"), name="broken")
    pipeline = _pipeline(
        model, [FakeSource(_frames(3, acks))], [broken], registry, stall_timeout_s=0.3
    )
    pipeline.start()
    wait_until(lambda: broken.publishes >= 9, 30, "9 tries to publish")  # still trying
    assert acks == [] and pipeline.in_flight == 3
    assert any("delivery stalled: 3 frame(s)" in r for r in pipeline.readiness_reasons())
    pipeline.close(time.monotonic() + 2)
    assert pipeline.undelivered == 3 and acks == []  # left for redelivery, and reported


def test_a_refused_result_becomes_a_dead_letter_and_is_acked(model: ReverseDistillation) -> None:
    acks: list[str] = []
    registry = CollectorRegistry()
    # Refuses every result (as Kafka refuses one over its size limit) but takes dead letters.
    picky = FakeSink(fail_with=RecordRefusedError("result too large"), fail_dead_letters=False)
    raws = [RawMessage(b"img %d" % i, b"cam", (), "frames", 0, i) for i in range(3)]
    frames = [dataclasses.replace(f, raw=r) for f, r in zip(_frames(3, acks), raws, strict=True)]
    _run(_pipeline(model, [FakeSource(frames)], [picky], registry))
    assert sorted(acks) == ["cam-0", "cam-1", "cam-2"]  # the partition is not held back
    assert len(picky.dead_letters) == 3
    letter = picky.dead_letters[0]
    assert letter.stage == "publish" and letter.error_type == "publish_refused"
    assert "result too large" in letter.reason
    assert sorted(d.raw.offset for d in picky.dead_letters if d.raw) == [0, 1, 2]
    failed = {"stage": "publish", "reason": "publish_refused"}
    assert registry.get_sample_value("inspector_frames_failed_total", failed) == 3
    assert registry.get_sample_value("inspector_frames_processed_total", {"camera": "cam"}) is None


def test_inference_failure_becomes_dead_letters(model: ReverseDistillation) -> None:
    acks: list[str] = []
    sink = FakeSink()
    raws = [
        RawMessage(b"jpeg %d" % i, b"cam", (("frame_id", b"x"),), "frames", 0, i) for i in range(3)
    ]
    frames = [dataclasses.replace(f, raw=r) for f, r in zip(_frames(3, acks), raws, strict=True)]
    pipeline = _pipeline(model, [FakeSource(frames)], [sink], CollectorRegistry())

    def broken(images: list[np.ndarray], map_filter: object = None) -> object:
        raise RuntimeError("CUDA error: out of memory")

    pipeline.worker.score = broken  # type: ignore[assignment,method-assign]
    _run(pipeline)
    assert len(sink.dead_letters) == 3 and not sink.results
    assert {d.stage for d in sink.dead_letters} == {"inference"}
    assert "out of memory" in sink.dead_letters[0].reason
    # The original message travels with the frame: the dead letter can be replayed as it came.
    assert sorted((d.raw for d in sink.dead_letters), key=lambda r: r.offset if r else -1) == raws
    assert len(acks) == 3


def test_stop_fetching_drains_what_was_admitted(model: ReverseDistillation) -> None:
    acks: list[str] = []
    source = FakeSource(_frames(4, acks), finite=False)
    sink = FakeSink()
    pipeline = _pipeline(model, [source], [sink], CollectorRegistry())
    pipeline.start()
    wait_until(lambda: len(acks) >= 4, 30, "4 acks")
    source.add(_frames(4, acks, "late"))
    pipeline.stop_fetching()
    assert pipeline.wait_drained(30)
    pipeline.close()
    delivered = {r.message.frame_id for r in sink.results}
    assert set(acks) == delivered  # whatever was taken was delivered; nothing half-done
    assert {f"cam-{i}" for i in range(4)} <= delivered


class _DyingSource(FakeSource):
    @property
    def exhausted(self) -> bool:
        return False  # a live source: the pipeline would wait for it for ever

    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        time.sleep(0.2)
        raise RuntimeError("a bug in the source")


def test_a_dead_source_thread_ends_the_pipeline_at_once(model: ReverseDistillation) -> None:
    pipeline = _pipeline(model, [_DyingSource([])], [FakeSink()], CollectorRegistry())
    pipeline.start()
    assert not pipeline.wait_drained(0.1)  # alive: more may come
    # Nothing is in flight, so there is nothing to drain: finished as soon as the thread died.
    assert pipeline.wait_drained(5.0)
    assert isinstance(pipeline.fatal, RuntimeError)
    assert any("pipeline failed" in r for r in pipeline.readiness_reasons())
    pipeline.close()


def test_in_flight_bytes_are_bounded_but_one_frame_always_fits(
    model: ReverseDistillation,
) -> None:
    acks: list[str] = []
    sink = FakeSink(delay_s=0.05)
    frames = _frames(6, acks)  # 48 x 80 x 3 = 11520 bytes each
    pipeline = _pipeline(model, [FakeSource(frames)], [sink], CollectorRegistry())
    pipeline.admission.max_bytes = 12_000  # one frame at a time
    _run(pipeline)
    assert len(acks) == 6 and sink.max_outstanding == 1


def test_results_after_the_deadline_are_flagged_late_and_counted(
    model: ReverseDistillation,
) -> None:
    # Every frame captured at once; a slow sink with 4 frames in flight lets results out at
    # ~13/s, so later frames get their verdict past the 1 s deadline. Lateness grows with the
    # processing order: on-time results first, then late ones, and the counter agrees.
    acks: list[str] = []
    captured = datetime.now(UTC).isoformat()
    line = [
        dataclasses.replace(f, meta=dataclasses.replace(f.meta, captured_at=captured))
        for f in _frames(40, acks, "line1")
    ]
    other = _frames(3, acks, "bench")  # no recipe: lateness unknown
    source, sink = FakeSource([*line, *other], per_poll=8), FakeSink(delay_s=0.3)
    registry = CollectorRegistry()
    recipes = Recipes({"line1": CameraRecipe(deadline_ms=1000)})
    pipeline = _pipeline(
        model, [source], [sink], registry, max_in_flight=4, queue=2, recipes=recipes
    )
    _run(pipeline)
    messages = sorted((r.message for r in sink.results), key=lambda m: m.processed_at)
    flags = [m.late for m in messages if m.camera_id == "line1"]
    assert len(flags) == 40
    assert flags == sorted(flags)  # on time, then late: never on time again after a late one
    assert 0 < flags.count(True) < 40
    assert [m.late for m in messages if m.camera_id == "bench"] == [None] * 3
    late = registry.get_sample_value("inspector_results_late_total", {"camera": "line1"})
    assert late == flags.count(True)
    assert registry.get_sample_value("inspector_results_late_total", {"camera": "bench"}) is None
