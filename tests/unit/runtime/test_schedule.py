"""Earliest-deadline-first scheduling of the inference thread (inspector.runtime.schedule).

The scheduler's order is checked with a fake worker that logs what it runs; the stitched
maps of interleaved tiled frames and a whole pipeline with a heavy camera run a real small
model (resnet18, 64 px tiles).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fakes import FakeSink, FakeSource, make_frame, small_models
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import BatcherConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ServedModel
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.recipes import CameraRecipe, Recipes, RoiConfig, TilingConfig
from inspector.runtime.records import Frame, FrameMeta, ScoredBatch
from inspector.runtime.regions import FrameView, plan_view
from inspector.runtime.routing import Routed
from inspector.runtime.schedule import Finished, Scheduler
from inspector.runtime.worker import ModelWorker

SIZE = 64
TILING = TilingConfig(tile=SIZE, overlap=16)

# --- a fake worker: logs each model batch it runs ----------------------------------------


class _Post:
    """Stands in for a postprocessor: the scheduler only asks for its map filter."""

    @staticmethod
    def needs_map(scores: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(scores), dtype=torch.bool)


def _ids(images: Sequence[Any]) -> list[int]:
    return [int(img[0, 0, 0]) for img in images]


class _FakeScoring:
    def __init__(self, log: list[tuple[str, int, int]], ids: list[int], steps: int) -> None:
        self.log, self.ids, self.steps, self.ran = log, ids, steps, 0

    @property
    def steps_left(self) -> int:
        return self.steps - self.ran

    def step(self) -> bool:
        self.log.append(("tiles", self.ids[0], self.ran))
        self.ran += 1
        return self.ran == self.steps

    def result(self) -> ScoredBatch:
        return ScoredBatch(torch.tensor([float(i) for i in self.ids]), [None] * len(self.ids))


class _FakeWorker:
    max_batch_size = 4

    def __init__(self, fail: set[int] | None = None) -> None:
        self.log: list[tuple[str, int, int]] = []
        self.fail = fail or set()

    def score(self, images: Sequence[Any], map_filter: Any = None) -> ScoredBatch:
        ids = _ids(images)
        self.log.append(("batch", ids[0], len(ids)))
        if self.fail & set(ids):
            raise RuntimeError("the device fell over")
        return ScoredBatch(torch.tensor([float(i) for i in ids]), [None] * len(ids))

    def view_scoring(
        self, images: Sequence[Any], views: Sequence[FrameView], map_filter: Any = None
    ) -> _FakeScoring:
        steps = math.ceil(sum(v.inputs for v in views) / self.max_batch_size)
        return _FakeScoring(self.log, _ids(images), steps)


def _model(worker: Any) -> ServedModel:
    return ServedModel("m", Path("m.safetensors"), "0" * 64, worker, _Post(), 0)  # type: ignore[arg-type]


class _Line:
    """Frames of cameras with deadlines, due ``deadline_s`` after their (fake) capture."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}
        self.captured: dict[str, float] = {}
        self.now = 1000.0

    def frame(self, i: int, camera: str, captured: float) -> Frame:
        image = np.full((4, 4, 3), i, np.uint8)
        self.captured[str(i)] = captured
        return make_frame(image, str(i), camera)

    def due(self, meta: FrameMeta) -> float | None:
        deadline = self.deadlines.get(meta.camera_id)
        return None if deadline is None else self.captured[meta.frame_id] + deadline

    def scheduler(self) -> Scheduler:
        return Scheduler(self.due, wall_clock=lambda: self.now)


def _plain(model: ServedModel, frames: list[Frame]) -> Routed:
    return Routed(model, frames, [model.postprocessor] * len(frames))


def _tiled(model: ServedModel, frames: list[Frame], size: tuple[int, int] = (150, 200)) -> Routed:
    view = plan_view(CameraRecipe(tiling=TILING), size, (SIZE, SIZE))
    assert view is not None and view.inputs == 12  # 3 steps of 4 tiles
    return Routed(model, frames, [model.postprocessor] * len(frames), [view] * len(frames))


def _run_all(scheduler: Scheduler) -> list[Finished]:
    done = []
    while scheduler:
        if (finished := scheduler.step()) is not None:
            done.append(finished)
    return done


def test_jobs_run_earliest_deadline_first_whatever_their_arrival() -> None:
    worker, line = _FakeWorker(), _Line()
    model = _model(worker)
    line.deadlines = {"slow": 5.0, "fast": 1.0}
    schedule = line.scheduler()
    schedule.add(_plain(model, [line.frame(1, "slow", 1000.0)]))  # due 1005
    schedule.add(_plain(model, [line.frame(2, "none", 999.0)]))  # no deadline: last
    schedule.add(_plain(model, [line.frame(3, "fast", 1000.5)]))  # due 1001.5
    schedule.add(_plain(model, [line.frame(4, "fast", 1000.2)]))  # due 1001.2
    schedule.add(_plain(model, [line.frame(5, "none", 998.0)]))  # no deadline: by arrival
    done = _run_all(schedule)
    assert [int(f.group.frames[0].meta.frame_id) for f in done] == [4, 3, 1, 2, 5]
    # A batch is due when its first frame is.
    schedule.add(_plain(model, [line.frame(6, "slow", 999.0), line.frame(7, "fast", 1000.0)]))
    schedule.add(_plain(model, [line.frame(8, "fast", 1000.1)]))
    assert [f.group.frames[0].meta.frame_id for f in _run_all(schedule)] == ["6", "8"]


def test_a_regular_batch_runs_between_the_chunks_of_a_tiled_frame() -> None:
    worker, line = _FakeWorker(), _Line()
    model = _model(worker)
    line.deadlines = {"hires": 5.0, "line": 1.0}
    schedule = line.scheduler()
    schedule.add(_tiled(model, [line.frame(1, "hires", 1000.0)]))
    assert schedule.step() is None  # the first chunk of three
    line.now = 1000.3
    schedule.add(_plain(model, [line.frame(2, "line", 1000.2), line.frame(3, "line", 1000.25)]))
    regular = schedule.step()  # due sooner: it goes before the tiled frame's second chunk
    assert regular is not None and [f.meta.frame_id for f in regular.group.frames] == ["2", "3"]
    assert _run_all(schedule)[0].group.frames[0].meta.frame_id == "1"
    assert worker.log == [("tiles", 1, 0), ("batch", 2, 2), ("tiles", 1, 1), ("tiles", 1, 2)]


def test_a_mixed_group_keeps_its_resized_frames_together_and_tiles_each_frame_alone() -> None:
    worker, line = _FakeWorker(), _Line()
    model = _model(worker)
    tiled = plan_view(CameraRecipe(tiling=TILING), (150, 200), (SIZE, SIZE))
    roi = RoiConfig(x=0, y=0, width=SIZE, height=SIZE)
    resized = plan_view(CameraRecipe(roi=roi), (150, 200), (SIZE, SIZE))
    assert tiled is not None and resized is not None
    frames = [line.frame(i, "cam", 1000.0) for i in range(4)]
    views = [tiled, resized, tiled, resized]
    jobs = line.scheduler().add(Routed(model, frames, [model.postprocessor] * 4, views))
    assert [[f.meta.frame_id for f in j.group.frames] for j in jobs] == [["1", "3"], ["0"], ["2"]]
    assert [j.steps_left for j in jobs] == [1, 3, 3]
    assert [j.group.views for j in jobs] == [[resized, resized], [tiled], [tiled]]


def test_a_late_frame_still_completes_after_those_that_can_be_on_time() -> None:
    worker, line = _FakeWorker(), _Line()
    model = _model(worker)
    line.deadlines = {"hires": 5.0, "line": 1.0}
    schedule = line.scheduler()
    schedule.add(_tiled(model, [line.frame(1, "hires", 994.0)]))  # due 999: late already
    schedule.add(_plain(model, [line.frame(2, "line", 998.0)]))  # due 999.5: late too
    schedule.add(_plain(model, [line.frame(3, "line", 999.8)]))  # due 1000.8: can be on time
    schedule.add(_plain(model, [line.frame(4, "none", 990.0)]))  # no deadline
    done = _run_all(schedule)
    # On time first; then the late ones, the most overdue first; no deadline last.
    assert [f.group.frames[0].meta.frame_id for f in done] == ["3", "1", "2", "4"]
    assert all(isinstance(f.output, ScoredBatch) for f in done)


def test_every_frame_comes_back_exactly_once_failures_included() -> None:
    rng = random.Random(7)
    worker, line = _FakeWorker(fail={13, 29}), _Line()
    model = _model(worker)
    line.deadlines = {"hires": 5.0, "line": 1.0, "other": 2.0}
    schedule = line.scheduler()
    added: list[str] = []
    back: list[str] = []
    failed: list[str] = []
    for i in range(60):
        camera = rng.choice(["hires", "line", "line", "other", "none"])
        frame = line.frame(i, camera, 1000.0 + rng.uniform(-2, 2))
        added.append(frame.meta.frame_id)
        schedule.add((_tiled if camera == "hires" else _plain)(model, [frame]))
        line.now += rng.uniform(0, 0.3)
        for _ in range(rng.randint(0, 2)):
            if (finished := schedule.step()) is not None:
                ids = [f.meta.frame_id for f in finished.group.frames]
                (failed if isinstance(finished.output, Exception) else back).extend(ids)
    for finished in _run_all(schedule):
        ids = [f.meta.frame_id for f in finished.group.frames]
        (failed if isinstance(finished.output, Exception) else back).extend(ids)
    assert sorted(back + failed) == sorted(added)  # none lost, none twice
    assert sorted(failed) == ["13", "29"]
    assert not schedule and schedule.frames == 0


# --- a real model: stitched maps, and a pipeline with a heavy camera ---------------------


@pytest.fixture(scope="module")
def model() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=SIZE)).eval()


def _worker(model: ReverseDistillation, max_batch_size: int) -> ModelWorker:
    return ModelWorker(
        model,
        torch.device("cpu"),
        Metrics(CollectorRegistry()),
        warmup_batches=0,
        max_batch_size=max_batch_size,
    )


@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_interleaved_tiled_frames_stitch_exactly_as_in_one_go(
    model: ReverseDistillation, chunk: int
) -> None:
    rng = np.random.default_rng(3)
    sizes = [(150, 200), (130, 170)]
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    views = [plan_view(CameraRecipe(tiling=TILING), s, (SIZE, SIZE)) for s in sizes]
    planned = [v for v in views if v is not None]
    whole = _worker(model, max_batch_size=32).score_views(images, planned)  # one model batch

    worker = _worker(model, max_batch_size=chunk)
    default = small_models(model, Metrics(CollectorRegistry())).default
    served = dataclasses.replace(default, worker=worker)
    frames = [make_frame(img, f"f{i}", "hires") for i, img in enumerate(images)]
    plain = [make_frame(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), "p", "line")]
    # The regular frame is overdue, the tiled ones have no deadline: it runs at once.
    schedule = Scheduler(lambda meta: 0.0 if meta.camera_id == "line" else None)
    schedule.add(Routed(served, frames, [served.postprocessor] * 2, planned))
    assert schedule.step() is None  # a chunk of the first frame, then the regular batch
    schedule.add(Routed(served, plain, [served.postprocessor]))
    finished = _run_all(schedule)
    assert [f.group.frames[0].meta.frame_id for f in finished] == ["p", "f0", "f1"]
    done = {f.group.frames[0].meta.frame_id: f for f in finished}
    for i in range(2):
        output = done[f"f{i}"].output
        assert isinstance(output, ScoredBatch) and output.maps[0] is not None
        expected = whole.maps[i]
        assert expected is not None and output.maps[0].shape == expected.shape
        np.testing.assert_allclose(output.maps[0].numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
        assert float(output.scores[0]) == pytest.approx(float(whole.scores[i]), rel=1e-4)


def _captured(frame: Frame) -> Frame:
    meta = dataclasses.replace(frame.meta, captured_at=datetime.now(UTC).isoformat())
    return dataclasses.replace(frame, meta=meta)


def test_a_light_cameras_frames_do_not_wait_for_a_whole_heavy_frame(
    model: ReverseDistillation,
) -> None:
    # The heavy frame (12 tiles, 6 model batches of 2) enters first; the line's frames arrive
    # while its first chunk runs. They are due sooner, so they are inspected between its
    # chunks and their verdicts come before its own.
    rng = np.random.default_rng(5)
    acks: list[str] = []
    heavy = _captured(
        make_frame(rng.integers(0, 255, (150, 200, 3), np.uint8), "heavy", "hires", acks)
    )
    line = [
        make_frame(rng.integers(0, 255, (48, 80, 3), np.uint8), f"line-{i}", "line", acks)
        for i in range(3)
    ]
    source, sink = FakeSource([heavy], per_poll=8, finite=False), FakeSink()
    recipes = Recipes(
        {
            "hires": CameraRecipe(tiling=TILING, deadline_ms=5000),
            "line": CameraRecipe(deadline_ms=1000),
        }
    )
    metrics = Metrics(CollectorRegistry())
    models = small_models(model, metrics, max_batch_size=2)
    pipeline = Pipeline(
        [source],
        BatcherConfig(max_batch_size=2, max_wait_ms=5, queue_size=8),
        models,
        [sink],
        metrics,
        recipes=recipes,
    )
    worker = models.default.worker
    events: list[str] = []
    score, view_scoring = worker.score, worker.view_scoring

    def logged_score(images: Sequence[Any], map_filter: Any = None) -> ScoredBatch:
        events.append(f"batch of {len(images)}")
        return score(images, map_filter)

    def logged_view_scoring(images: Any, views: Any, map_filter: Any = None) -> Any:
        scoring = view_scoring(images, views, map_filter)
        step: Callable[[], bool] = scoring.step

        def logged_step() -> bool:
            events.append("chunk")
            if events.count("chunk") == 1:  # the line's frames arrive during the first chunk
                source.add(_captured(f) for f in line)
                source.finite = True
                wait_until(
                    lambda: pipeline.frames.qsize() == len(line), 10, "the line's frames queued"
                )
            return step()

        scoring.step = logged_step  # type: ignore[method-assign]
        return scoring

    worker.score = logged_score  # type: ignore[method-assign]
    worker.view_scoring = logged_view_scoring  # type: ignore[method-assign]
    pipeline.start()
    wait_until(lambda: pipeline.finished, 60, "the pipeline to finish")
    pipeline.close()

    assert [r.message.frame_id for r in sink.results] == ["line-0", "line-1", "line-2", "heavy"]
    assert sorted(acks) == ["heavy", "line-0", "line-1", "line-2"] and not sink.dead_letters
    # One chunk, the line's frames (a batch of 2 and one of 1), then the rest of the chunks.
    assert events == ["chunk", "batch of 2", "batch of 1", *["chunk"] * 5]
    assert all(r.message.late is False for r in sink.results)
