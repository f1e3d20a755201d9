"""Every model load runs on a passing thread, whichever thread asks (the README's OpenMP rule).

Two observations, neither a mock: the log records of a load name the thread that wrote them,
and the process's OS threads (``/proc/self/task``) show an OpenMP team that a live thread
keeps once it ran a parallel torch op. A load asked for by a thread that stays alive (the
main thread at start, an HTTP worker thread for ``POST /v1/models``) must leave no thread
behind once it returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import torch
from fakes import UNIT_CALIBRATION, serve_control, small_models
from prometheus_client import CollectorRegistry

from inspector.checkpoint import CheckpointMeta, save_checkpoint
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import BatcherConfig, InspectorConfig, explicit_config
from inspector.runtime.control.restore import StartingLine, restore_models
from inspector.runtime.control.state import SavedModel
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import load_configured_model, load_served_model
from inspector.runtime.pipeline import Pipeline

TOKEN = "t0ken-for-the-line-0123456789"
#: The name of the thread every load runs on (models.load_served_model).
SETUP_THREAD = "inspector-model-setup"

#: The thread counts mean something only where each thread gets its own OpenMP team.
HAS_TEAMS = (
    os.path.isdir("/proc/self/task")
    and torch.get_num_threads() >= 2
    and "OpenMP" in torch.__config__.parallel_info()
)
teams = pytest.mark.skipif(
    not HAS_TEAMS, reason="needs Linux /proc, torch on OpenMP and 2+ intra-op threads"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("threads") / "m.safetensors"
    config = ArchitectureConfig(backbone="resnet18", image_size=(64, 64))
    meta = CheckpointMeta(name="m", model=config, calibration=UNIT_CALIBRATION)
    torch.manual_seed(0)
    save_checkpoint(path, ReverseDistillation(config).eval(), meta)
    return path


def _config(checkpoint: Path | None = None) -> InspectorConfig:
    # One warm-up batch: a forward pass, parallel convolutions for certain.
    model = {"device": "cpu", "precision": "fp32", "warmup_batches": 1}
    if checkpoint is not None:
        model["checkpoint"] = str(checkpoint)
    return explicit_config({"model": model, "batcher": {"max_batch_size": 2}})


def _os_threads() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def _left_behind(before: set[int], caller: int | None = None, timeout_s: float = 30.0) -> set[int]:
    """OS threads beyond ``before`` (and the live ``caller``) once they stop ending."""
    deadline = time.monotonic() + timeout_s
    while (extra := _os_threads() - before - {caller}) and time.monotonic() < deadline:
        time.sleep(0.02)  # a passing thread's team ends just after it, asynchronously
    return extra


@contextlib.contextmanager
def _on_a_thread_that_stays(work: Callable[[], object]) -> Iterator[int]:
    """Run ``work`` on a thread that stays alive while the block runs; yields its OS id."""
    done, leave = threading.Event(), threading.Event()
    failure: list[BaseException] = []
    native: list[int] = []

    def run() -> None:
        native.append(threading.get_native_id())
        try:
            work()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()
            leave.wait()

    thread = threading.Thread(target=run, name="stays-alive", daemon=True)
    thread.start()
    try:
        assert done.wait(300), "the work did not finish"
        if failure:
            raise failure[0]
        yield native[0]
    finally:
        leave.set()
        thread.join(30)


def _load_threads(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The threads that wrote the loads' log lines (the warm-up's, the model's)."""
    loaders = ("inspector.runtime.worker", "inspector.runtime.models")
    return {r.threadName for r in caplog.records if r.name in loaders}


@teams
def test_a_live_thread_that_ran_the_model_keeps_a_team(checkpoint: Path) -> None:
    # The premise the other tests rest on: without the passing thread, the caller keeps
    # threads of its own for as long as it lives.
    served = load_served_model("m", checkpoint, _config(), Metrics(CollectorRegistry()))
    before = _os_threads()
    with _on_a_thread_that_stays(served.worker.warm_up) as caller:
        assert _os_threads() - before - {caller}, "no OpenMP team: the counts below prove nothing"


@pytest.mark.parametrize("who", ["configured", "restored"])
def test_a_load_at_start_leaves_the_calling_thread_without_a_team(
    checkpoint: Path, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics(CollectorRegistry())
    # Built here: its initialisation runs torch ops too, and not on the thread watched below.
    served = small_models(ReverseDistillation(ArchitectureConfig(image_size=64)), metrics)
    saved = SavedModel(name="restored", checkpoint=checkpoint)
    line = StartingLine((), (), (saved,), {}, Path("state.json"))

    def start() -> None:  # what the daemon's main thread does (and its SIGHUP reload thread)
        if who == "configured":
            served.add(load_configured_model(_config(checkpoint), metrics))
        else:
            restore_models(line, served, _config(), metrics)

    before = _os_threads()
    caplog.set_level(logging.INFO, logger="inspector")
    with _on_a_thread_that_stays(start) as caller:
        assert served.get("m" if who == "configured" else "restored").worker.ready
        assert _load_threads(caplog) == {SETUP_THREAD}
        if HAS_TEAMS:
            assert not _left_behind(before, caller), "the caller kept the load's OpenMP team"


@pytest.mark.component  # serves the control API over HTTP
def test_a_model_added_over_the_api_leaves_no_team_on_the_request_thread(
    checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = small_models(ReverseDistillation(ArchitectureConfig(image_size=64)), metrics)
    pipeline = Pipeline(
        [], BatcherConfig(max_batch_size=2, max_wait_ms=5), models, [], metrics, keep_open=True
    )
    pipeline.start()
    serving = _config()
    server = serve_control(pipeline, models, registry, metrics, serving, TOKEN)
    base, auth = f"http://127.0.0.1:{server.port}", {"Authorization": f"Bearer {TOKEN}"}
    try:
        # A first request starts the HTTP worker thread that the next one reuses: from then
        # on the only new threads are the load's own.
        assert requests.get(base + "/v1/models", headers=auth, timeout=30).status_code == 200
        before = _os_threads()
        caplog.set_level(logging.INFO, logger="inspector")
        body = {"name": "product-b", "checkpoint": str(checkpoint)}
        added = requests.post(base + "/v1/models", json=body, headers=auth, timeout=300)
        assert added.status_code == 201, added.text
        assert models.get("product-b").worker.ready
        assert _load_threads(caplog) == {SETUP_THREAD}
        if HAS_TEAMS:
            left = _left_behind(before)
            assert not left, f"threads left behind by the load: {sorted(left)}"
    finally:
        server.stop()
        pipeline.stop_fetching()
        pipeline.close()
