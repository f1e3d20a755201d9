"""Prometheus metrics of the daemon, on an injected registry.

Names, types and labels are a public contract (``streaming-contract.md``): dashboards and
alerts query them. One prefix, base units in the name, ``_total`` only on counters, labels of
low cardinality (never frame ids). This module is a leaf: it imports nothing from inspector.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

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
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

STAGES = ("decode", "queue", "inference", "postprocess", "publish")


class Metrics:
    """Every metric the daemon exports, registered on ``registry``.

    Args:
        registry: Where to register; tests pass a fresh ``CollectorRegistry`` and read values
            with ``registry.get_sample_value``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.frames_received = Counter(
            "inspector_frames_received", "Frames taken in by a source.", ["source"], registry=r
        )
        self.frames_processed = Counter(
            "inspector_frames_processed",
            "Frames with a published result.",
            ["camera"],
            registry=r,
        )
        self.frames_failed = Counter(
            "inspector_frames_failed",
            "Frames that failed (dead-lettered or lost with a reason).",
            ["stage", "reason"],
            registry=r,
        )
        self.anomalies = Counter(
            "inspector_anomalies", "Frames judged anomalous.", ["camera"], registry=r
        )
        self.defects = Counter("inspector_defects", "Defect regions found.", ["camera"], registry=r)
        self.anomaly_score = Histogram(
            "inspector_anomaly_score",
            "Normalised image scores (threshold at 0.5).",
            ["camera"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "inspector_stage_seconds",
            "Time per frame in each pipeline stage.",
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
        self.batch_size = Histogram(
            "inspector_batch_size",
            "Frames per inference batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "inspector_queue_depth", "Items waiting in a bounded queue.", ["queue"], registry=r
        )
        self.consumer_lag = Gauge(
            "inspector_consumer_lag",
            "Messages behind the partition's high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.model_info = Info("inspector_model", "The loaded model.", registry=r)
        self.model_reloads = Counter(
            "inspector_model_reloads", "Model (re)loads by result.", ["result"], registry=r
        )
        self.ready = Gauge("inspector_ready", "1 when /readyz answers 200.", registry=r)
        self.frames_dropped = Counter(
            "inspector_frames_dropped",
            "Frames dropped on purpose (stale live frames...).",
            ["camera", "reason"],
            registry=r,
        )
        self.camera_up = Gauge(
            "inspector_camera_up", "1 while a camera streams.", ["camera"], registry=r
        )
        self.camera_reconnects = Counter(
            "inspector_camera_reconnects", "Camera reconnect attempts.", ["camera"], registry=r
        )
        self.camera_last_frame = Gauge(
            "inspector_camera_last_frame_timestamp_seconds",
            "Unix time of the last frame read from a camera.",
            ["camera"],
            registry=r,
        )
        self.threshold = Gauge(
            "inspector_threshold",
            "Applied thresholds on the normalised scale.",
            ["kind"],
            registry=r,
        )
        self.build_info = Info("inspector_build", "inspector build.", registry=r)
        self.build_info.info({"version": _package_version()})


def _package_version() -> str:
    try:
        return version("inspector")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"
