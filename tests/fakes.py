"""Fakes for unit tests: in-memory sources and sinks with the real stage interfaces.

Shipped in the package (not under tests/) so that downstream users can test their own wiring
against the same fakes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from inspector.messages import (
    Defect,
    Latency,
    ModelRef,
    ResultMessage,
    SourceRef,
    ThresholdInfo,
)
from inspector.model.calibration import Calibration
from inspector.runtime.config import InspectorConfig, KafkaConfig, PostprocessConfig, SourceConfig
from inspector.runtime.control.line import LineControl
from inspector.runtime.control.server import HttpServer
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelSet, ServedModel, load_served_model
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.postprocess import Postprocessor
from inspector.runtime.records import DeadLetter, Frame, FrameMeta, Inspection
from inspector.runtime.shadow import ShadowBook
from inspector.runtime.sinks.base import DoneFn, Sink
from inspector.runtime.sources.base import Source
from inspector.runtime.worker import ModelWorker


def make_frame(
    image: np.ndarray, frame_id: str, camera_id: str = "cam", acks: list[str] | None = None
) -> Frame:
    """A frame whose ack appends ``frame_id`` to ``acks``."""

    def ack() -> None:
        if acks is not None:
            acks.append(frame_id)

    meta = FrameMeta(
        frame_id=frame_id,
        camera_id=camera_id,
        image_size=(int(image.shape[0]), int(image.shape[1])),
        received_monotonic=time.monotonic(),
    )
    return Frame(meta, image, ack)


def make_result(
    frame_id: str,
    camera_id: str = "cam",
    *,
    anomalous: bool = True,
    defects: list[Defect] | None = None,
    image_size: tuple[int, int] = (64, 64),
    total_ms: float = 0.0,
    offset: int | None = None,
) -> ResultMessage:
    """A valid result message (score 0.9 if ``anomalous`` else 0.1, threshold 0.5).

    With ``offset``, it claims to come from partition 0 of ``inspector.frames`` at that offset.
    """
    source = (
        None if offset is None else SourceRef(topic="inspector.frames", partition=0, offset=offset)
    )
    return ResultMessage(
        frame_id=frame_id,
        camera_id=camera_id,
        source=source,
        processed_at="2025-01-01T00:00:00+00:00",
        model=ModelRef(name="m", backbone="resnet18", checkpoint_sha256="0" * 64),
        score=0.9 if anomalous else 0.1,
        raw_score=0.4,
        is_anomalous=anomalous,
        threshold=ThresholdInfo(image=0.5, pixel=0.5, source="checkpoint"),
        defects=defects or [],
        mask=None,
        image_size=image_size,
        latency_ms=Latency(total=total_ms),
    )


def make_inspection(
    frame_id: str,
    camera_id: str = "cam",
    *,
    anomalous: bool = False,
    offset: int | None = None,
    image_size: tuple[int, int] = (4, 6),
) -> Inspection:
    """A finished frame for sink tests: black pixels, a zero heat map, no mask."""
    message = make_result(
        frame_id, camera_id, anomalous=anomalous, image_size=image_size, total_ms=1.5, offset=offset
    )
    frame = make_frame(np.zeros((*image_size, 3), np.uint8), frame_id, camera_id)
    return Inspection(message, frame, np.zeros(image_size, np.float32), None)


def make_dead_letter(reason: str, acks: list[str] | None = None, key: str = "dl") -> DeadLetter:
    """A dead letter whose ack appends ``key`` to ``acks``."""

    def ack() -> None:
        if acks is not None:
            acks.append(key)

    return DeadLetter(
        reason, "undecodable", "decode", "cam", None, datetime.now(UTC).isoformat(), ack
    )


class FakeSource(Source):
    """Hands out prepared items, a few per poll; finite (exhausted when empty).

    Attributes:
        paused: Whether :meth:`pause` is in effect.
        pause_calls: How often :meth:`pause` was called.
        final_committed: Whether :meth:`final_commit` ran; closed likewise.
    """

    name = "fake"

    def __init__(
        self, items: Iterable[Frame | DeadLetter], per_poll: int = 4, *, finite: bool = True
    ) -> None:
        self._items = list(items)
        self._lock = threading.Lock()
        self.per_poll = per_poll
        self.finite = finite
        self.paused = False
        self.pause_calls = 0
        self.final_committed = False
        self.closed = False

    def add(self, items: Iterable[Frame | DeadLetter]) -> None:
        """Queue more items (thread-safe)."""
        with self._lock:
            self._items.extend(items)

    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        """Up to ``per_poll`` items unless paused."""
        with self._lock:
            if self.paused or not self._items:
                out: list[Frame | DeadLetter] = []
            else:
                out, self._items = self._items[: self.per_poll], self._items[self.per_poll :]
        if not out:
            time.sleep(min(timeout, 0.01))
        return out

    def pause(self) -> None:
        """Stop handing out items."""
        if not self.paused:
            self.pause_calls += 1
        self.paused = True

    def resume(self) -> None:
        """Hand out items again."""
        self.paused = False

    @property
    def exhausted(self) -> bool:
        """Finite and nothing left."""
        with self._lock:
            return self.finite and not self._items

    def final_commit(self, timeout: float) -> None:
        """Record that a final commit happened."""
        self.final_committed = True

    def close(self) -> None:
        """Record the close."""
        self.closed = True


@dataclass
class FakeSink(Sink):
    """Records what it receives; optionally slow or failing.

    A slow sink confirms ``delay_s`` after each publish, from its own thread; a failing one
    confirms with ``fail_with`` (dead letters too, unless ``fail_dead_letters`` is off: a
    sink that refuses some results, e.g. too large, but takes dead letters), for its first
    ``failures`` publishes (``None``: always).
    """

    delay_s: float = 0.0
    fail_with: BaseException | None = None
    fail_dead_letters: bool = True
    failures: int | None = None
    publishes: int = 0
    name: str = "fake-sink"
    results: list[Inspection] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    max_outstanding: int = 0
    _outstanding: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _complete(self, done: DoneFn, *, dead_letter: bool = False) -> None:
        with self._lock:
            self.publishes += 1
            failing = self.failures is None or self.publishes <= self.failures
        error = None if dead_letter and not self.fail_dead_letters else self.fail_with
        error = error if failing else None

        def finish() -> None:
            if self.delay_s:
                time.sleep(self.delay_s)
            with self._lock:
                self._outstanding -= 1
            done(error)

        with self._lock:
            self._outstanding += 1
            self.max_outstanding = max(self.max_outstanding, self._outstanding)
        if self.delay_s:
            threading.Thread(target=finish, daemon=True).start()
        else:
            finish()

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Record the result and confirm (later, if slow)."""
        with self._lock:
            self.results.append(inspection)
        self._complete(done)

    def publish_dead_letter(self, letter: DeadLetter, done: DoneFn) -> None:
        """Record the dead letter and confirm."""
        with self._lock:
            self.dead_letters.append(letter)
        self._complete(done, dead_letter=True)


#: A calibration whose raw scale is the normalised one: threshold 0.5, range 0..1.
UNIT_CALIBRATION = Calibration(
    mode="good_only",
    image_threshold=0.5,
    image_min=0.0,
    image_max=1.0,
    pixel_threshold=0.5,
    pixel_min=0.0,
    pixel_max=1.0,
)


def small_models(
    model: torch.nn.Module, metrics: Metrics, name: str = "m", max_batch_size: int = 4
) -> ModelSet:
    """One served CPU model (no warm-up) on :data:`UNIT_CALIBRATION`, as the default."""
    worker = ModelWorker(
        model, torch.device("cpu"), metrics, warmup_batches=0, max_batch_size=max_batch_size
    )
    sha = (name.encode().hex() * 64)[:64]
    post = Postprocessor(
        UNIT_CALIBRATION,
        ModelRef(name=name, backbone="resnet18", checkpoint_sha256=sha),
        PostprocessConfig(),
    )
    return ModelSet(ServedModel(name, Path(f"{name}.safetensors"), sha, worker, post, 0), metrics)


def serve_control(
    pipeline: Pipeline,
    models: ModelSet,
    registry: CollectorRegistry,
    metrics: Metrics,
    serving: InspectorConfig,
    token: str,
    configs: dict[str, SourceConfig] | None = None,
    *,
    state_path: Path | None = None,
    shadows: ShadowBook | None = None,
) -> HttpServer:
    """The control API over ``pipeline`` on a started HTTP server (loopback, a free port).

    Models added through it load with ``serving``'s ``model`` section, as the daemon loads them.
    ``configs`` are the running sources' configurations by id; ``state_path`` and ``shadows``
    as the daemon gives them to :class:`LineControl`.
    """
    control = LineControl(
        pipeline.intake,
        models,
        pipeline.recipes,
        KafkaConfig(),
        metrics,
        configs or {},
        load_model=lambda name, path: load_served_model(name, path, serving, metrics),
        state_path=state_path,
        shadows=shadows,
    )
    server = HttpServer(
        "127.0.0.1",
        0,
        registry,
        lambda: [],
        metrics,
        admin_token=SecretStr(token),
        control=lambda: control,
    )
    server.start()
    return server
