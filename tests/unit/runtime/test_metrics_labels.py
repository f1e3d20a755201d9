"""Camera labels are bounded whatever ids producers send."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from inspector.runtime.metrics import OTHER_CAMERA, CameraLabels, Metrics


def test_configured_cameras_then_the_first_n_then_other() -> None:
    labels = CameraLabels(configured={"line-1", "line-2"}, max_seen=2)
    assert [labels.label(c) for c in ("a", "b", "c", "a", "line-2", "d")] == [
        "a",
        "b",
        OTHER_CAMERA,
        "a",
        "line-2",
        OTHER_CAMERA,
    ]


def test_the_bound_holds_under_concurrent_first_sightings() -> None:
    labels = CameraLabels(max_seen=64)
    seen: set[str] = set()
    lock = threading.Lock()

    def run(base: int) -> None:
        for i in range(500):
            label = labels.label(f"cam-{base}-{i}")
            with lock:
                seen.add(label)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen - {OTHER_CAMERA}) == 64


def test_a_thousand_uuid_cameras_keep_a_scrape_small() -> None:
    import uuid

    registry = CollectorRegistry()
    metrics = Metrics(registry, cameras=CameraLabels(max_seen=64))
    for _ in range(1000):
        camera = metrics.camera(str(uuid.uuid4()))
        metrics.anomaly_score.labels(camera=camera).observe(0.3)
        metrics.frames_processed.labels(camera=camera).inc()
        metrics.anomalies.labels(camera=camera).inc()
        metrics.defects.labels(camera=camera).inc()
    size = len(generate_latest(registry))
    assert size < 100 * 1024, size
    assert b"_created" not in generate_latest(registry)
