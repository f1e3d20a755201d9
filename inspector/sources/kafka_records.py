"""Kafka records to frames or dead letters: decoding, header defaults, capture times.

Pure functions of one record, used by :class:`inspector.sources.kafka.KafkaSource`; kept apart
so the consumer logic (commits, rebalances, backpressure) stays readable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from inspector.errors import ImageDecodeError
from inspector.imaging import check_jpeg_complete, decode_image
from inspector.records import AckFn, DeadLetter, Frame, FrameMeta, RawMessage

log = logging.getLogger(__name__)


def _text(value: bytes | None) -> str | None:
    if not value:
        return None
    text = value.decode("utf-8", errors="replace").strip()
    return text or None


def _iso_from_ms(ms: int) -> str | None:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None


def captured_at(header: bytes | None, record_timestamp_ms: int | None) -> str | None:
    """Capture time for a record: the ``captured_at`` header, else the record timestamp.

    Args:
        header: The header's value: RFC 3339 (kept as given) or epoch milliseconds.
        record_timestamp_ms: The record's Kafka timestamp (``-1``/``None``: none).

    Returns:
        An RFC 3339 timestamp, or ``None`` when neither is usable.
    """
    text = _text(header)
    if text is not None:
        if text.isdigit():
            converted = _iso_from_ms(int(text))
            if converted is not None:
                return converted
        else:
            try:
                datetime.fromisoformat(text)
                return text
            except ValueError:
                pass
        log.debug("ignoring unparseable captured_at header %r", text[:64])
    if record_timestamp_ms is not None and record_timestamp_ms >= 0:
        return _iso_from_ms(record_timestamp_ms)
    return None


_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Decoded:
    """Outcome of decoding one value.

    Attributes:
        image: BGR pixels ``(h, w, 3)``, or, when decoded by torchvision, RGB ``(3, h, w)``
            uint8 on its device; ``None`` when the value is not an image.
        error: Why it is not (``None`` on success).
        seconds: Time spent decoding.
    """

    image: np.ndarray | torch.Tensor | None
    error: str | None
    seconds: float


def _jpeg_tensor(data: bytes) -> torch.Tensor:
    # torchvision reads the bytes from a CPU uint8 tensor; bytearray: frombuffer wants it writable.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_timed(data: bytes, jpeg_device: torch.device | None = None) -> Decoded:
    """Decode ``data`` like :func:`inspector.imaging.decode_image`, never raising.

    Args:
        data: The encoded image.
        jpeg_device: Decode JPEG with torchvision on this device (``cuda``: nvJPEG) into an
            RGB ``(3, h, w)`` tensor; ``None``, another format, or a JPEG torchvision refuses
            (nvJPEG lacks some JPEG variants that OpenCV reads): OpenCV, BGR ``(h, w, 3)``.
    """
    started = time.perf_counter()
    try:
        image: np.ndarray | torch.Tensor | None = None
        if jpeg_device is not None and data[:3] == _JPEG_MAGIC:
            check_jpeg_complete(data)
            try:
                image = decode_jpeg(_jpeg_tensor(data), mode=ImageReadMode.RGB, device=jpeg_device)
            except RuntimeError as exc:
                log.debug("torchvision refused a JPEG (%s); decoding it with OpenCV", exc)
        if image is None:
            image = decode_image(data)
    except ImageDecodeError as exc:
        return Decoded(None, str(exc), time.perf_counter() - started)
    except Exception as exc:  # OpenCV raising on hostile input is still bad input, not a bug
        return Decoded(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    return Decoded(image, None, time.perf_counter() - started)


def decode_jpegs(values: Sequence[bytes], device: torch.device) -> list[Decoded]:
    """Decode JPEG values with torchvision in one call: one nvJPEG batch on CUDA.

    torchvision documents a list as faster than a call per image on CUDA, and returns nothing
    when any image of the list fails; then each value is decoded on its own
    (:func:`decode_timed`), so one bad frame costs its batch the batching, not its frames.

    Args:
        values: JPEG-encoded images.
        device: Where to decode (and keep) them.

    Returns:
        One outcome per value, in order; a batch's time is shared equally among its frames.
    """
    if not values:
        return []
    started = time.perf_counter()
    try:
        for data in values:
            check_jpeg_complete(data)
        images = decode_jpeg(
            [_jpeg_tensor(data) for data in values], mode=ImageReadMode.RGB, device=device
        )
    except Exception as exc:  # a truncated or refused image among them: find it alone
        log.debug("batched JPEG decoding failed (%s); decoding one by one", exc)
        return [decode_timed(data, device) for data in values]
    share = (time.perf_counter() - started) / len(values)
    return [Decoded(image, None, share) for image in images]


def decode_values(
    values: Sequence[bytes | None], executor: Executor, jpeg_device: torch.device | None
) -> list[Decoded | None]:
    """Decode a poll's values: JPEG on ``jpeg_device`` as one batch, the rest on ``executor``.

    Args:
        values: Encoded images; ``None`` for a value not to decode (empty or oversized).
        executor: Thread pool for OpenCV (which releases the GIL while decoding).
        jpeg_device: Device for torchvision's JPEG decoding; ``None``: everything by OpenCV.

    Returns:
        One outcome per value, in order (``None`` for ``None``).
    """
    on_device = [
        i
        for i, data in enumerate(values)
        if jpeg_device is not None and data is not None and data[:3] == _JPEG_MAGIC
    ]
    batched = set(on_device)
    futures = {
        i: executor.submit(decode_timed, data)
        for i, data in enumerate(values)
        if data is not None and i not in batched
    }
    outcomes: list[Decoded | None] = [None] * len(values)
    if jpeg_device is not None and on_device:
        # On this thread, while the pool decodes the other formats.
        batch = decode_jpegs([values[i] or b"" for i in on_device], jpeg_device)
        for i, outcome in zip(on_device, batch, strict=True):
            outcomes[i] = outcome
    for i, future in futures.items():
        outcomes[i] = future.result()
    return outcomes


def wants_decoding(value: bytes | None, max_message_bytes: int) -> bool:
    """Whether a value goes to the decoder (empty and oversized ones are dead letters)."""
    return bool(value) and len(value or b"") <= max_message_bytes


def to_item(
    topic: str,
    partition: int,
    record: Any,
    decoded: Decoded | None,
    *,
    max_message_bytes: int,
    received: float,
    ack: AckFn,
) -> Frame | DeadLetter:
    """The frame, or the dead letter (with the original message), for one record.

    Args:
        topic: Record's topic.
        partition: Record's partition.
        record: kafka-python ``ConsumerRecord`` (``offset``, ``key``, ``value``, ``headers``,
            ``timestamp``).
        decoded: Its decoded value; ``None`` when it was not decoded (empty or oversized).
        max_message_bytes: The size limit, for the reason of an oversized value.
        received: Monotonic time the frame entered the pipeline.
        ack: Marks the record's offset done.

    Returns:
        A frame (ids from the headers ``frame_id``/``camera_id``, else ``topic:partition:
        offset`` and the key) or a dead letter with error type ``empty``, ``oversized`` or
        ``undecodable``.
    """
    headers = {key: value for key, value in (record.headers or [])}
    camera = _text(headers.get("camera_id")) or _text(record.key) or "unknown"
    value: bytes = record.value or b""
    raw = RawMessage(
        value=value,
        key=record.key,
        headers=tuple((key, v or b"") for key, v in (record.headers or [])),
        topic=topic,
        partition=partition,
        offset=record.offset,
    )
    if decoded is None or decoded.image is None:
        if not value:
            kind, reason = "empty", "empty message value (no image bytes)"
        elif decoded is None:
            kind = "oversized"
            reason = (
                f"frame of {len(value)} bytes exceeds kafka.max_message_bytes ({max_message_bytes})"
            )
        else:
            kind, reason = "undecodable", decoded.error or "undecodable"
        log.debug("dead letter %s:%d:%d: %s", topic, partition, record.offset, reason)
        failed_at = datetime.now(UTC).isoformat()
        return DeadLetter(reason, kind, "decode", camera, raw, failed_at, ack)
    image = decoded.image
    height, width = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
    meta = FrameMeta(
        frame_id=_text(headers.get("frame_id")) or f"{topic}:{partition}:{record.offset}",
        camera_id=camera,
        image_size=(int(height), int(width)),
        source_topic=topic,
        source_partition=partition,
        source_offset=record.offset,
        captured_at=captured_at(headers.get("captured_at"), record.timestamp),
        received_monotonic=received,
        decode_ms=decoded.seconds * 1e3,
    )
    return Frame(meta, image, ack, raw)
