"""Camera labels are bounded whatever ids producers send."""

from __future__ import annotations

import threading
import time

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


class _SlowToHash(str):
    """A camera id whose hashing sleeps, handing the GIL to another thread.

    :meth:`CameraLabels.label` hashes the id when it stores it, just after it checked the bound:
    each thread stops between the check and the store, so without the lock every thread of a
    round passes the check before any stores (the bound broken), where under the GIL alone a
    switch in that window is rare enough that a test of many threads and ids all but never saw
    one.
    """

    def __hash__(self) -> int:
        time.sleep(0.0005)
        return str.__hash__(self)

    __eq__ = str.__eq__


def test_the_bound_holds_under_concurrent_first_sightings() -> None:
    # 8 threads released together, each with a first sighting, on a bound of 1; 20 rounds.
    # With CameraLabels' lock replaced by a no-op 19 or 20 of 20 runs of this test failed.
    rounds, threads = 20, 8
    boards = [CameraLabels(max_seen=1) for _ in range(rounds)]
    given: list[list[str]] = [[] for _ in range(rounds)]
    start = threading.Barrier(threads)

    def run(thread: int) -> None:
        for r, labels in enumerate(boards):
            start.wait()
            given[r].append(labels.label(_SlowToHash(f"cam-{thread}-{r}")))

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for labels in given:
        assert len(labels) == threads
        assert sorted(labels).count(OTHER_CAMERA) == threads - 1, labels


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
