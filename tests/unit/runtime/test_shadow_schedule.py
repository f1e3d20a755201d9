"""Shadow jobs on the inference thread: after every served job, dropped when served work waits.

A real small model (resnet18, 64 px, random weights) scores the frames; the shadow lane holds a
served output until its shadow job ran or was dropped, and every frame leaves it exactly once.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import make_frame, small_models
from prometheus_client import CollectorRegistry

from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelSet, ServedModel
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.records import Frame, ScoredBatch
from inspector.runtime.routing import Routed
from inspector.runtime.schedule import Finished, Scheduler
from inspector.runtime.shadow import Inferred, ShadowLane


@pytest.fixture(scope="module")
def models() -> tuple[ModelSet, Metrics, CollectorRegistry]:
    torch.manual_seed(0)
    net = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    served = small_models(net, metrics, name="served")
    other = small_models(net, metrics, name="candidate").default
    served.add(dataclasses.replace(other, checkpoint=Path("candidate.safetensors")))
    return served, metrics, registry


def _frames(camera: str, first: int, n: int) -> list[Frame]:
    rng = np.random.default_rng(first)
    return [
        make_frame(
            rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), f"{camera}-{first + i}", camera
        )
        for i in range(n)
    ]


def _group(model: ServedModel, frames: list[Frame], *, shadow: bool = False) -> Routed:
    # A shadow group, as the shadow lane makes it, asks for no map.
    return Routed(model, frames, [model.postprocessor] * len(frames), maps=not shadow)


def _run_all(schedule: Scheduler) -> list[Finished]:
    done = []
    while schedule:
        if (finished := schedule.step()) is not None:
            done.append(finished)
    return done


def test_a_shadow_job_runs_only_once_no_served_job_waits(
    models: tuple[ModelSet, Metrics, CollectorRegistry],
) -> None:
    model_set = models[0]
    served, candidate = model_set.get("served"), model_set.get("candidate")
    schedule = Scheduler(lambda meta: None)
    schedule.add(_group(served, _frames("a", 0, 2)))
    first = schedule.step()
    assert first is not None and not first.shadow
    # Its shadow job, queued once it was served: nothing served waits, so it runs.
    shadow = schedule.add_shadow(_group(candidate, first.group.frames, shadow=True))
    assert schedule.next_job() is shadow and schedule.frames == 0
    last = schedule.step()
    assert last is not None and last.shadow
    assert isinstance(last.output, ScoredBatch) and len(last.output.scores) == 2
    assert last.output.maps == [None, None]  # scores only: no map leaves the device
    assert not schedule and schedule.take_skipped() == []


def test_served_work_waiting_drops_the_shadow_jobs_begun_or_not(
    models: tuple[ModelSet, Metrics, CollectorRegistry],
) -> None:
    model_set = models[0]
    served, candidate = model_set.get("served"), model_set.get("candidate")
    schedule = Scheduler(lambda meta: None)
    shadows = [
        _group(candidate, _frames("a", 20, 1), shadow=True),
        _group(candidate, _frames("a", 30, 2), shadow=True),
    ]
    for group in shadows:
        schedule.add_shadow(group)
    assert schedule.frames == 0 and len(schedule) == 2  # held, but no served frame
    schedule.add(_group(served, _frames("a", 40, 3)))
    done = _run_all(schedule)
    assert [(d.shadow, len(d.group.frames)) for d in done] == [(False, 3)]
    skipped = schedule.take_skipped()
    assert [g.frames for g in skipped] == [g.frames for g in shadows]
    assert schedule.take_skipped() == []


def test_the_lane_holds_each_result_for_its_shadow_or_counts_the_skip(
    models: tuple[ModelSet, Metrics, CollectorRegistry],
) -> None:
    model_set, metrics, registry = models
    served = model_set.get("served")
    recipes = Recipes(
        {
            "shadowed": CameraRecipe(
                model="served", shadow_model="candidate", shadow_image_threshold=0.0
            ),
            "plain": CameraRecipe(model="served"),
        }
    )
    emitted: list[Inferred] = []
    lane = ShadowLane(model_set, recipes, metrics, emitted.append)
    schedule = Scheduler(lambda meta: None)

    def serve(frames: list[Frame]) -> None:
        schedule.add(_group(served, frames))
        while schedule.frames:
            done = schedule.step()
            lane.skipped(schedule.take_skipped())
            if done is not None and not done.shadow:
                output = done.output
                assert isinstance(output, ScoredBatch)
                lane.served(
                    schedule,
                    Inferred(done.group.frames, output, 0.0, 0.0, done.group.postprocessors),
                )

    # A camera without a shadow: its output goes on at once.
    serve(_frames("plain", 0, 2))
    assert len(emitted) == 1 and emitted[0].shadow(0) is None
    # A shadowed one: held until its shadow ran (nothing served waits), then with verdicts.
    serve(_frames("shadowed", 10, 2))
    assert len(emitted) == 1 and len(schedule) == 1
    done = schedule.step()
    assert done is not None and done.shadow
    lane.finished(done)
    verdicts = [emitted[1].shadow(i) for i in range(2)]
    assert all(v is not None and v.model == "candidate" and v.is_anomalous for v in verdicts)
    # Held again, but served frames arrive first: the shadow is dropped and counted, the
    # result goes on without it, and the new frames' result is held in its turn.
    serve(_frames("shadowed", 20, 3))
    serve(_frames("plain", 30, 1))
    assert [len(e.frames) for e in emitted] == [2, 2, 3, 1]
    assert all(emitted[2].shadow(i) is None for i in range(3))
    skipped = registry.get_sample_value("inspector_shadow_skipped_total", {"camera": "shadowed"})
    assert skipped == 3
    assert not schedule  # nothing held is left behind


def test_a_frame_without_slack_for_its_shadow_is_not_held(
    models: tuple[ModelSet, Metrics, CollectorRegistry],
) -> None:
    model_set, metrics, registry = models
    served = model_set.get("served")
    recipe = CameraRecipe(model="served", shadow_model="candidate", deadline_ms=100)
    recipes = Recipes({"tight": recipe}, wall_clock=lambda: 1000.0)
    emitted: list[Inferred] = []
    lane = ShadowLane(model_set, recipes, metrics, emitted.append, wall_clock=lambda: 1000.0)
    schedule = Scheduler(lambda meta: None)

    def captured(frame: Frame, at: float) -> Frame:
        moment = datetime.fromtimestamp(at, UTC).isoformat()
        return dataclasses.replace(frame, meta=dataclasses.replace(frame.meta, captured_at=moment))

    before = registry.get_sample_value("inspector_shadow_skipped_total", {"camera": "tight"}) or 0
    # Due at 1000.05 and 1000.5; served inference took 0.2 s: only the second has the slack.
    frames = [
        captured(f, at) for f, at in zip(_frames("tight", 50, 2), (999.95, 1000.4), strict=True)
    ]
    output = ScoredBatch(torch.zeros(2), [None, None])
    lane.served(schedule, Inferred(frames, output, 0.2, 0.0, [served.postprocessor] * 2))
    assert emitted == [] and len(schedule) == 1  # held for the second frame's shadow
    done = schedule.step()
    assert (
        done is not None
        and done.shadow
        and [f.meta.frame_id for f in done.group.frames] == ["tight-51"]
    )
    lane.finished(done)
    assert emitted[0].shadow(0) is None and emitted[0].shadow(1) is not None
    after = registry.get_sample_value("inspector_shadow_skipped_total", {"camera": "tight"})
    assert after == before + 1
