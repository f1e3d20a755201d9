"""Operators' labels of retained frames: their metrics and their copy on Kafka.

A label is stored in the retention index first (:meth:`RetentionIndex.label`); what this module
adds is best effort and never undoes it:

* :class:`LabelMetrics`: ``inspector_labels_total{camera,label}`` and
  ``inspector_label_clears_total{camera}`` (camera values bounded like every camera label,
  :meth:`Metrics.camera`), and ``inspector_label_publishes_total{result}``;
* :class:`LabelPublisher`: sends each label (and each clear) as ``inspector.label/v1`` JSON to
  ``kafka.labels_topic`` from a thread of its own, through a bounded queue, so a request never
  waits for a broker; a failed or dropped send is logged (rate-limited) and counted.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, get_args

from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, Counter

from inspector.label_messages import LabelMessage
from inspector.runtime.config import KafkaConfig
from inspector.runtime.kafka.producer import ProducerKeeper
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import RateLimitedLog
from inspector.runtime.retention.records import RetainedFrame

log = logging.getLogger(__name__)

#: Outcomes of one label's send: the ``result`` label of ``inspector_label_publishes_total``.
PublishResult = Literal["delivered", "failed", "dropped"]
PUBLISH_RESULTS: tuple[PublishResult, ...] = get_args(PublishResult)
#: Labels waiting for the publisher thread; beyond it new ones are dropped (counted).
MAX_PENDING = 256
#: How long :meth:`LabelPublisher.close` lets the thread send what is queued.
CLOSE_TIMEOUT_S = 2.0

_T = TypeVar("_T")
_ONCE: weakref.WeakKeyDictionary[CollectorRegistry, dict[type[Any], Any]] = (
    weakref.WeakKeyDictionary()
)
_ONCE_LOCK = threading.Lock()


def once_per_registry(
    registry: CollectorRegistry, factory: Callable[[CollectorRegistry], _T]
) -> _T:
    """``factory(registry)``, made once per registry and factory (a metric registers once).

    A daemon, or a test, may build its HTTP app or its sinks more than once on one registry;
    registering the same metric twice would raise.
    """
    with _ONCE_LOCK:
        made = _ONCE.setdefault(registry, {})
        key = factory if isinstance(factory, type) else type(factory)
        if key not in made:
            made[key] = factory(registry)
        found: _T = made[key]
        return found


class LabelMetrics:
    """Labels set, and their sends to Kafka.

    Args:
        registry: The daemon's registry; get the one instance with :func:`once_per_registry`.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.labels = Counter(
            "inspector_labels",
            "Labels operators set on retained frames, by camera and label.",
            ["camera", "label"],
            registry=registry,
        )
        self.clears = Counter(
            "inspector_label_clears",
            "Labels operators removed from retained frames, by camera (the frame is then "
            "unlabelled, and evictable).",
            ["camera"],
            registry=registry,
        )
        self.publishes = Counter(
            "inspector_label_publishes",
            "Labels (and clears) sent to kafka.labels_topic: delivered, failed (the broker "
            "refused or did not answer), dropped (too many waiting). The label stays stored "
            "either way.",
            ["result"],
            registry=registry,
        )
        for result in PUBLISH_RESULTS:
            self.publishes.labels(result)

    def count(self, metrics: Metrics, frame: RetainedFrame) -> None:
        """Count one label set on ``frame`` (its camera bounded like every camera label)."""
        if frame.label is not None:
            self.labels.labels(camera=metrics.camera(frame.camera_id), label=frame.label).inc()

    def count_clear(self, metrics: Metrics, frame: RetainedFrame) -> None:
        """Count one label removed from ``frame``."""
        self.clears.labels(camera=metrics.camera(frame.camera_id)).inc()


def producer_settings(kafka: KafkaConfig, metrics: Metrics) -> dict[str, Any]:
    """The label producer's keyword settings: the Kafka sink's, without idempotence.

    Secrets included: never log them.
    """
    keeper = ProducerKeeper(kafka, metrics, KafkaProducer, on_replaced=lambda _: None)
    return keeper.settings(idempotent=False)


def label_message(frame: RetainedFrame) -> LabelMessage:
    """The ``inspector.label/v1`` message of a labelled frame.

    Raises:
        ValueError: ``frame`` has no label.
    """
    if frame.label is None or frame.labelled_at is None:
        raise ValueError("the frame has no label")
    return LabelMessage(
        frame_id=frame.frame_id,
        camera_id=frame.camera_id,
        label=frame.label,
        kind=frame.label_kind,
        note=frame.note,
        labelled_at=frame.labelled_at,
        score=frame.score,
        threshold=frame.threshold,
        is_anomalous=frame.is_anomalous,
        model_name=frame.model_name,
        captured_at=frame.captured_at,
        processed_at=frame.processed_at,
    )


def clear_message(frame: RetainedFrame, cleared_at: str) -> LabelMessage:
    """The ``inspector.label/v1`` message saying that ``frame``'s label was removed.

    Args:
        frame: The frame, as it is after the clear (its verdict is what the message carries).
        cleared_at: When the label was removed (RFC 3339, UTC): the message's ``labelled_at``.
    """
    return LabelMessage(
        frame_id=frame.frame_id,
        camera_id=frame.camera_id,
        action="clear",
        label=None,
        labelled_at=cleared_at,
        score=frame.score,
        threshold=frame.threshold,
        is_anomalous=frame.is_anomalous,
        model_name=frame.model_name,
        captured_at=frame.captured_at,
        processed_at=frame.processed_at,
    )


class LabelPublisher:
    """Sends labels to ``kafka.labels_topic`` from one thread, with a producer of its own.

    The producer (acks=all, the daemon's connection, security and compression settings, see
    :meth:`ProducerKeeper.settings`) is built on the thread at the first label, so neither the
    daemon's start nor a request waits for a broker. Not idempotent: a label sent twice is
    harmless (the last label of a frame wins).

    Args:
        kafka: Connection and topic.
        metrics: Where sends are counted.
        settings: The producer's keyword settings (:func:`producer_settings`).
        producer_factory: Builds the producer from ``settings`` (tests pass a fake).
        max_pending: Labels waiting at most; beyond, new ones are dropped (counted).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        metrics: LabelMetrics,
        settings: Mapping[str, Any],
        *,
        producer_factory: Callable[..., Any] = KafkaProducer,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.kafka = kafka
        self.metrics = metrics
        self._settings = dict(settings)
        self._factory = producer_factory
        self._max_pending = max_pending
        self._queue: deque[LabelMessage] = deque()
        # Guards _queue, _busy, _stopping and _thread; notified on every change of them.
        self._changed = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._warn = RateLimitedLog(log, 60.0).warning

    def publish(self, message: LabelMessage) -> None:
        """Queue one label for sending; never blocks (a full queue drops it, counted)."""
        with self._changed:
            if self._stopping:
                accepted = False
            else:
                accepted = len(self._queue) < self._max_pending
                if accepted:
                    self._queue.append(message)
                    if self._thread is None:
                        self._thread = threading.Thread(
                            target=self._run, name="inspector-labels", daemon=True
                        )
                        self._thread.start()
                    self._changed.notify_all()
        if not accepted:
            self.metrics.publishes.labels("dropped").inc()
            self._warn(
                "labels: label of frame %r not sent to %s: %d label(s) waiting already "
                "(kafka unreachable?); it stays stored",
                message.frame_id[:64],
                self.kafka.labels_topic,
                self._max_pending,
            )

    def flush(self, timeout: float) -> bool:
        """Wait until every queued label was sent or failed; ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._queue and not self._busy, timeout=max(0.0, timeout)
            )

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued (within ``timeout``), then close the producer."""
        with self._changed:
            self._stopping = True
            thread = self._thread
            self._changed.notify_all()
        if thread is not None:
            thread.join(timeout)
        producer, self._producer = self._producer, None
        if producer is not None and (thread is None or not thread.is_alive()):
            try:
                producer.close(timeout=1.0)
            except Exception as exc:  # closing at shutdown: say it, go on
                log.warning("labels: closing the producer failed: %r", exc)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue) or self._stopping)
                if not self._queue:
                    return
                message = self._queue.popleft()
                self._busy = True
            try:
                self._send(message)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _send(self, message: LabelMessage) -> None:
        topic = self.kafka.labels_topic
        try:
            if self._producer is None:
                self._producer = self._factory(**self._settings)
            future = self._producer.send(
                topic,
                value=message.to_json().encode("utf-8"),
                key=message.camera_id.encode("utf-8", "surrogatepass"),
            )
            future.get(timeout=self.kafka.request_timeout_ms / 1000)
        except Exception as exc:  # any failure of a best-effort copy: counted, never raised
            self.metrics.publishes.labels("failed").inc()
            self._warn(
                "labels: label of frame %r not sent to %s: %s: %s; it stays stored",
                message.frame_id[:64],
                topic,
                type(exc).__name__,
                exc,
            )
            return
        self.metrics.publishes.labels("delivered").inc()


__all__ = [
    "MAX_PENDING",
    "PUBLISH_RESULTS",
    "LabelMetrics",
    "LabelPublisher",
    "PublishResult",
    "clear_message",
    "label_message",
    "once_per_registry",
    "producer_settings",
]
