"""Prometheus metrics of the daemon, on an injected registry.

Names, types and labels are a public contract (``streaming-contract.md``): dashboards and
alerts query them. One prefix, base units in the name, ``_total`` only on counters, labels of
low cardinality (never frame ids). This module is a leaf: of inspector it imports only the
dead-letter vocabulary (:mod:`inspector.dead_letters`, a leaf itself).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from inspector.dead_letters import FAILED_LABELS

# No ``*_created`` series: one more sample per child that Prometheus does not use for rates,
# and a large share of a scrape's size. Process-wide, as the client library only offers it so.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Stage latencies: sub-millisecond decode to multi-second CPU inference.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Normalised scores (threshold at 0.5), finest around the threshold; 1.0, the clip value, is
#: the +Inf bucket. Few buckets: this histogram is per camera, so each bucket is multiplied by
#: the camera bound in the size of ``/metrics``.
SCORE_BUCKETS = (0.25, 0.4, 0.5, 0.6, 0.75)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

STAGES = ("decode", "queue", "inference", "postprocess", "publish")

#: The label value of every camera beyond the bound.
OTHER_CAMERA = "other"
#: Cameras that get a label of their own without being configured (``metrics.max_camera_labels``).
DEFAULT_MAX_CAMERA_LABELS = 64


class CameraLabels:
    """Bounded ``camera`` label values: configured cameras, the first N others seen, ``other``.

    Camera ids of Kafka frames come from producers; as labels they would grow ``/metrics``
    without bound, and a series once created is kept for the process's life. Ids are
    validated before they get here (:mod:`inspector.runtime.ids`). Thread-safe.

    Args:
        configured: Cameras known from the configuration; always their own label.
        max_seen: Further cameras given a label of their own, first come first served.
    """

    def __init__(
        self, configured: Iterable[str] = (), max_seen: int = DEFAULT_MAX_CAMERA_LABELS
    ) -> None:
        self._configured = frozenset(configured)
        self._max_seen = max_seen
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    @property
    def configured(self) -> frozenset[str]:
        """The cameras known from the configuration (each always its own label)."""
        return self._configured

    def label(self, camera_id: str) -> str:
        """The label value for ``camera_id``."""
        if camera_id in self._configured or camera_id in self._seen:
            return camera_id
        with self._lock:
            if len(self._seen) < self._max_seen:
                self._seen.add(camera_id)
                return camera_id
        return OTHER_CAMERA


class Metrics:
    """Every metric the daemon exports, registered on ``registry``.

    One attribute per metric, registered in groups that follow the data path: intake, latency,
    inspection, delivery, cameras, and the daemon itself (models, readiness, control).

    Args:
        registry: Where to register; tests pass a fresh ``CollectorRegistry`` and read values
            with ``registry.get_sample_value``.
        cameras: Bounds the ``camera`` label (default: no configured cameras, the first 64
            seen); use :meth:`camera` for every ``camera`` label value.
    """

    def __init__(self, registry: CollectorRegistry, *, cameras: CameraLabels | None = None) -> None:
        self.registry = registry
        self.cameras = cameras or CameraLabels()
        self._add_intake(registry)
        self._add_latency(registry)
        self._add_inspection(registry)
        self._add_delivery(registry)
        self._add_cameras(registry)
        self._add_daemon(registry)

    def camera(self, camera_id: str) -> str:
        """The bounded ``camera`` label value for ``camera_id``."""
        return self.cameras.label(camera_id)

    def _add_intake(self, r: CollectorRegistry) -> None:
        """What the sources take in, drop on purpose or repair, and what waits in the queues."""
        self.frames_received = Counter(
            "inspector_frames_received", "Frames taken in by a source.", ["source"], registry=r
        )
        self.frames_dropped = Counter(
            "inspector_frames_dropped",
            "Frames dropped on purpose (stale live frames...).",
            ["camera", "reason"],
            registry=r,
        )
        self.invalid_ids = Counter(
            "inspector_invalid_ids",
            "Ids from producers replaced because they were too long or not printable.",
            ["field"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "inspector_consumer_lag",
            "Messages behind the partition's high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "inspector_queue_depth", "Items waiting in a bounded queue.", ["queue"], registry=r
        )
        self.in_flight_bytes = Gauge(
            "inspector_in_flight_bytes",
            "Decoded frame bytes admitted and not yet delivered.",
            registry=r,
        )

    def _add_latency(self, r: CollectorRegistry) -> None:
        """How long: each stage, each inference batch (and its size), receipt to ack."""
        self.batch_size = Histogram(
            "inspector_batch_size",
            "Frames per inference batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_batch_seconds = Histogram(
            "inspector_inference_batch_seconds",
            "Time per inference batch (preprocessing, forward pass, results to the host).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "inspector_stage_seconds",
            "Time each frame spent in a pipeline stage (inference: the time of its batch).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "inspector_end_to_end_seconds",
            "Time from receipt to acknowledged result.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def _add_inspection(self, r: CollectorRegistry) -> None:
        """The verdicts: scores, anomalies, defects and the thresholds applied."""
        self.anomaly_score = Histogram(
            "inspector_anomaly_score",
            "Normalised image scores (threshold at 0.5).",
            ["camera"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.score_drift = Gauge(
            "inspector_score_drift",
            "Population stability index of the camera's last raw image scores against the "
            "served model's calibration quintiles (0: as calibrated; above 0.25: a significant "
            "shift). Absent until enough frames, or for a model calibrated without quintiles.",
            ["camera"],
            registry=r,
        )
        self.anomalies = Counter(
            "inspector_anomalies", "Frames judged anomalous.", ["camera"], registry=r
        )
        self.defects = Counter("inspector_defects", "Defect regions found.", ["camera"], registry=r)
        self.shadow_skipped = Counter(
            "inspector_shadow_skipped",
            "Frames the camera's shadow model did not score: it would have delayed served frames.",
            ["camera"],
            registry=r,
        )
        self.shadow_decisions = Counter(
            "inspector_shadow_decisions",
            "Frames scored by both the served and the shadow model, by each one's verdict "
            "(anomalous, good): the agree/disagree matrix.",
            ["camera", "served", "shadow"],
            registry=r,
        )
        self.threshold = Gauge(
            "inspector_threshold",
            "Applied thresholds on the normalised scale.",
            ["kind"],
            registry=r,
        )

    def _add_delivery(self, r: CollectorRegistry) -> None:
        """How frames end: delivered (on time or late) or failed; retries, rebuilt sink clients."""
        self.frames_processed = Counter(
            "inspector_frames_processed",
            "Frames with a published result.",
            ["camera"],
            registry=r,
        )
        self.results_late = Counter(
            "inspector_results_late",
            "Delivered results whose verdict was ready after the camera's deadline_ms.",
            ["camera"],
            registry=r,
        )
        self.frames_failed = Counter(
            "inspector_frames_failed",
            "Frames that failed (dead-lettered or lost with a reason).",
            ["stage", "reason"],
            registry=r,
        )
        # Every pair there can be, at zero: the first failure is then an increase that rate()
        # sees (a series born at 1 is not), and /metrics shows what may fail before it does.
        for stage, reason in FAILED_LABELS:
            self.frames_failed.labels(stage=stage, reason=reason)
        self.delivery_retries = Counter(
            "inspector_delivery_retries",
            "Deliveries tried again after a sink failed (the frame stays uncommitted meanwhile).",
            ["kind"],
            registry=r,
        )
        self.sink_rebuilds = Counter(
            "inspector_sink_rebuilds",
            "Sink clients rebuilt after they entered a state they cannot leave.",
            ["sink"],
            registry=r,
        )
        # Plant sinks (sinks.opcua, sinks.mqtt): from a frame's capture to the moment its
        # verdict was served (OPC UA) or acknowledged by the broker (MQTT PUBACK).
        self.plant_latency = Histogram(
            "inspector_plant_latency_seconds",
            "Capture to verdict served (opcua) or acknowledged (mqtt), per plant sink.",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Counted when the verdict reached the plant sink after the camera's deadline_ms (mqtt:
        # the PUBACK came too late), which the result's own `late` cannot know yet.
        self.plant_late = Counter(
            "inspector_plant_late",
            "Verdicts that reached a plant sink after the camera's deadline_ms, per plant sink.",
            ["sink"],
            registry=r,
        )
        # OPC UA serves latest values: a camera's result replaced before the server wrote it
        # (the server could not keep up) is counted here, never queued.
        self.opcua_updates_dropped = Counter(
            "inspector_opcua_updates_dropped",
            "Results the OPC UA server never served: a newer one of the camera replaced them.",
            ["camera"],
            registry=r,
        )

    def _add_cameras(self, r: CollectorRegistry) -> None:
        """Camera sources: up, reconnects, lost frames, frame rate, last frame."""
        self.camera_up = Gauge(
            "inspector_camera_up", "1 while a camera streams.", ["camera"], registry=r
        )
        self.camera_reconnects = Counter(
            "inspector_camera_reconnects", "Camera reconnect attempts.", ["camera"], registry=r
        )
        self.camera_incomplete = Counter(
            "inspector_camera_frames_incomplete",
            "Frames a GenICam camera sent incomplete (lost packets, timeouts): dropped.",
            ["camera"],
            registry=r,
        )
        self.camera_underruns = Counter(
            "inspector_camera_buffer_underruns",
            "Frames a GenICam camera sent while no buffer was free: lost.",
            ["camera"],
            registry=r,
        )
        self.camera_frame_rate = Gauge(
            "inspector_camera_frame_rate",
            "Frames per second a camera delivers (over the last seconds) and, kind=configured, "
            "what it was set to.",
            ["camera", "kind"],
            registry=r,
        )
        self.camera_last_frame = Gauge(
            "inspector_camera_last_frame_timestamp_seconds",
            "Unix time of the last frame read from a camera.",
            ["camera"],
            registry=r,
        )

    def _add_daemon(self, r: CollectorRegistry) -> None:
        """The daemon itself: its build, readiness, served models and control API changes."""
        self.build_info = Info("inspector_build", "inspector build.", registry=r)
        self.build_info.info({"version": _package_version()})
        self.ready = Gauge("inspector_ready", "1 when /readyz answers 200.", registry=r)
        self.model_info = Info("inspector_model", "The loaded model.", registry=r)
        self.model_reloads = Counter(
            "inspector_model_reloads", "Model (re)loads by result.", ["result"], registry=r
        )
        self.model_parity_checks = Counter(
            "inspector_model_parity_checks",
            "Probe-set parity checks of loaded models, by result (passed, refused, unchecked: "
            "no probe set stored).",
            ["result"],
            registry=r,
        )
        self.model_memory = Gauge(
            "inspector_model_memory_bytes",
            "Bytes of each served model's parameters and buffers, on its device.",
            ["model"],
            registry=r,
        )
        self.control_changes = Counter(
            "inspector_control_changes",
            "Changes asked through the control API, by action and result (ok, rejected, "
            "failed, unauthorized).",
            ["action", "result"],
            registry=r,
        )


def _package_version() -> str:
    try:
        return version("inspector")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"
