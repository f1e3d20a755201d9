"""A simulated production line: cameras that publish JPEG frames to the frames topic.

Frames come from a synthetic line (``inspector synth`` layout): the held-out ``test/good`` images
and, with probability ``defect_rate``, a ``test/<defect>`` image, so the model sees frames it was
not trained on. Every ``bad_every``-th frame is a truncated JPEG, to show that bad input ends in
the dead-letter topic with its reason instead of crashing anything. Used by ``inspector demo``
and by ``inspector simulate`` (the frame simulator of ``deploy/compose.yaml``).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2

from inspector.errors import DatasetError, InspectorError

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
#: Ground truth kept for the most recent frames only, so a demo can run for days.
_TRUTH_KEPT = 100_000


@dataclass(frozen=True)
class LineImage:
    """One image the simulated cameras can show.

    Attributes:
        jpeg: The encoded frame (what a camera gateway publishes).
        kind: ``good`` or the defect kind (``scratch``, ``crack``...): ground truth for the view.
    """

    jpeg: bytes
    kind: str


@dataclass(frozen=True)
class SimulatedFrame:
    """One Kafka record of the frames topic.

    Attributes:
        key: Camera id (the partitioning key).
        value: Encoded image (or, for a deliberately bad frame, a truncated one).
        headers: ``camera_id``, ``frame_id``, ``captured_at`` (epoch ms), ``content_type``,
            and ``truth`` (``good``, a defect kind, or ``corrupt``; ignored by the daemon).
    """

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class Producer(Protocol):
    """The part of ``kafka.KafkaProducer`` the simulator uses."""

    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        """Queue one record."""

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued record to be acknowledged."""

    def close(self, timeout: float | None = None) -> None:
        """Flush and disconnect."""


def load_line(data_dir: Path, *, quality: int = 90) -> list[LineImage]:
    """The test images of a synthetic (or MVTec-layout) line, JPEG-encoded.

    Args:
        data_dir: Dataset root with ``test/good`` and ``test/<defect>`` folders.
        quality: JPEG quality of the published frames.

    Returns:
        Good images first, then defective ones (order within a folder by file name).

    Raises:
        DatasetError: No ``test/good`` images, or no defective images.
    """
    test = data_dir / "test"
    images: list[LineImage] = []
    folders = sorted(p for p in test.iterdir() if p.is_dir()) if test.is_dir() else []
    for folder in sorted(folders, key=lambda p: p.name != "good"):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise DatasetError(f"{path}: not a readable image; regenerate the line")
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:  # pragma: no cover - OpenCV encodes any 8-bit BGR image
                raise DatasetError(f"{path}: cannot be JPEG-encoded")
            images.append(LineImage(jpeg=buf.tobytes(), kind=folder.name))
    kinds = {i.kind for i in images}
    if "good" not in kinds or len(kinds) < 2:
        raise DatasetError(
            f"{data_dir}: need test/good and at least one test/<defect> folder of images "
            "(write one with `inspector synth --out DIR`)"
        )
    return images


class LineSimulator:
    """Cameras of one line, round-robin, publishing at a fixed total rate.

    Args:
        images: What the cameras can show (see :func:`load_line`).
        cameras: Camera ids; frames go to them in turn.
        defect_rate: Probability that a frame shows a defective part.
        bad_every: Every n-th frame is a corrupt JPEG (0: never).
        seed: Seed of the part sequence (same seed, same sequence).
        clock: Epoch-seconds clock for ``captured_at`` (tests pass a fixed one).
    """

    def __init__(
        self,
        images: list[LineImage],
        cameras: list[str],
        *,
        defect_rate: float = 0.2,
        bad_every: int = 0,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not cameras:
            raise ValueError("need at least one camera id")
        if not 0.0 <= defect_rate <= 1.0:
            raise ValueError(f"defect_rate must be within 0..1, got {defect_rate}")
        self._good = [i for i in images if i.kind == "good"]
        self._defective = [i for i in images if i.kind != "good"]
        if not self._good or not self._defective:
            raise ValueError("need good and defective images")
        self.cameras = cameras
        self.defect_rate = defect_rate
        self.bad_every = bad_every
        self._rng = random.Random(seed)
        self._clock = clock
        self.count = 0
        self._truth: OrderedDict[str, str] = OrderedDict()

    def truth(self, frame_id: str) -> str | None:
        """What frame ``frame_id`` really showed: ``good``, a defect kind or ``corrupt``."""
        return self._truth.get(frame_id)

    def next_frame(self) -> SimulatedFrame:
        """The next record of the line."""
        n = self.count
        self.count += 1
        camera = self.cameras[n % len(self.cameras)]
        if self._rng.random() < self.defect_rate:
            image = self._rng.choice(self._defective)
        else:
            image = self._rng.choice(self._good)
        value, truth = image.jpeg, image.kind
        if self.bad_every and (n + 1) % self.bad_every == 0:
            # A frame cut off in transit: the daemon must dead-letter it, not crash.
            value, truth = image.jpeg[: len(image.jpeg) // 3], "corrupt"
        frame_id = f"{camera}-{n:07d}"
        self._truth[frame_id] = truth
        if len(self._truth) > _TRUTH_KEPT:
            self._truth.popitem(last=False)
        headers = [
            ("camera_id", camera.encode()),
            ("frame_id", frame_id.encode()),
            ("captured_at", str(int(self._clock() * 1000)).encode()),
            ("content_type", b"image/jpeg"),
            ("truth", truth.encode()),
        ]
        return SimulatedFrame(key=camera.encode(), value=value, headers=headers)

    def publish(
        self,
        producer: Producer,
        topic: str,
        *,
        fps: float,
        frames: int | None,
        stop: threading.Event,
    ) -> int:
        """Publish until ``frames`` were sent (``None``: forever) or ``stop`` is set.

        Args:
            producer: Where to send.
            topic: The frames topic.
            fps: Frames per second over all cameras (0: as fast as the producer takes them).
            frames: How many to send; ``None`` for no limit.
            stop: Set to end early (checked between frames).

        Returns:
            How many frames were sent (all acknowledged by the broker).
        """
        sent = 0
        period = 1.0 / fps if fps > 0 else 0.0
        next_at = time.monotonic()
        while (frames is None or sent < frames) and not stop.is_set():
            frame = self.next_frame()
            producer.send(topic, value=frame.value, key=frame.key, headers=frame.headers)
            sent += 1
            if period:
                next_at += period
                # Sleeping on the stop event keeps Ctrl+C prompt even at low rates.
                if stop.wait(max(0.0, next_at - time.monotonic())):
                    break
        producer.flush(timeout=30)
        return sent


def describe(images: list[LineImage]) -> str:
    """A one-line summary of a line's images, e.g. for the demo's start-up message."""
    kinds: dict[str, int] = {}
    for image in images:
        kinds[image.kind] = kinds.get(image.kind, 0) + 1
    return json.dumps(kinds, sort_keys=True)


def synthetic_line(
    data_dir: Path, *, image_size: int, seed: int, n_train: int = 60
) -> list[LineImage]:
    """Load the line in ``data_dir``, generating it with ``inspector synth`` first if absent.

    Args:
        data_dir: Dataset root (created if missing).
        image_size: Frame size in pixels when generating.
        seed: Generator seed when generating.
        n_train: Good training images when generating.

    Returns:
        The line's test images (see :func:`load_line`).
    """
    if not (data_dir / "synth.json").is_file():
        from inspector.tools.synth import generate_dataset

        log.info("generating a synthetic line in %s", data_dir)
        generate_dataset(data_dir, image_size=image_size, seed=seed, n_train=n_train)
    return load_line(data_dir)


def simulate(
    bootstrap_servers: str,
    topic: str,
    data_dir: Path,
    *,
    image_size: int = 256,
    cameras: int = 2,
    fps: float = 5.0,
    frames: int | None = None,
    defect_rate: float = 0.2,
    bad_every: int = 0,
    seed: int = 0,
) -> int:
    """``inspector simulate``: publish a simulated line to a Kafka cluster.

    Runs until ``frames`` were sent (``None``: forever) or Ctrl+C.

    Args:
        bootstrap_servers: The cluster.
        topic: The frames topic.
        data_dir: The synthetic line (generated there first if absent).
        image_size: Frame size in pixels when generating.
        cameras: Cameras ``line1-cam1`` ... taking turns.
        fps: Frames per second over all cameras (0: as fast as the producer takes them).
        frames: How many to send.
        defect_rate: Fraction of defective parts.
        bad_every: Every n-th frame is corrupt (0: never).
        seed: Seed of the line and of the part sequence.

    Returns:
        How many frames were sent.

    Raises:
        InspectorError: The cluster cannot be reached.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    images = synthetic_line(data_dir, image_size=image_size, seed=seed)
    names = [f"line1-cam{i + 1}" for i in range(cameras)]
    simulator = LineSimulator(
        images, names, defect_rate=defect_rate, bad_every=bad_every, seed=seed
    )
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    except KafkaError as exc:
        raise InspectorError(
            f"cannot reach Kafka at {bootstrap_servers} ({exc}); "
            "check --bootstrap-servers / INSPECTOR_KAFKA__BOOTSTRAP_SERVERS"
        ) from exc
    log.info(
        "publishing to %s on %s: %d cameras, %g frames/s, parts %s",
        topic,
        bootstrap_servers,
        len(names),
        fps,
        describe(images),
    )
    try:
        sent = simulator.publish(producer, topic, fps=fps, frames=frames, stop=threading.Event())
    except KeyboardInterrupt:
        sent = simulator.count
    finally:
        producer.close(timeout=10)
    log.info("published %d frames", sent)
    return sent
