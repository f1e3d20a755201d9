"""Kafka records to frames or dead letters: decoding, header defaults, capture times.

Pure functions of one record, used by :class:`~inspector.runtime.sources.kafka.KafkaSource`;
kept apart so the consumer logic (commits, rebalances, backpressure) stays readable. Every
function here is total over what a producer can send: any key, value or header (bytes of any
kind, any length) gives a frame or a dead letter, never an exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from inspector.dead_letters import ErrorType, FailureStage
from inspector.errors import ImageDecodeError, ImageTooLargeError
from inspector.imaging import check_jpeg_complete, decode_image, image_dimensions
from inspector.runtime.ids import (
    MAX_ID_CHARS,
    for_log,
    replacement_id,
    valid_frame_id,
    valid_id,
)
from inspector.runtime.records import AckFn, DeadLetter, Frame, FrameMeta, RawMessage

log = logging.getLogger(__name__)

#: Epoch milliseconds have 13 digits until the year 2286; more is not a time.
_MAX_EPOCH_DIGITS = 16


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


class InvalidHeaderError(ValueError):
    """A header is present but its value is not what the contract allows."""


def captured_at(header: bytes | None, record_timestamp_ms: int | None) -> str | None:
    """Capture time for a record: the ``captured_at`` header, else the record timestamp.

    A header that is present must be valid: capture times decide whether a verdict came in time,
    so a producer's malformed one is refused (the frame becomes a dead letter that says why)
    rather than silently replaced by the broker's time. (``str.isdigit`` alone is true for "²",
    which ``int`` refuses: that header once killed the source thread.)

    Args:
        header: The header's value: RFC 3339 (kept as given) or epoch milliseconds (ASCII
            digits); absent or empty: the record timestamp is used.
        record_timestamp_ms: The record's Kafka timestamp (``-1``/``None``: none).

    Returns:
        An RFC 3339 timestamp, or ``None`` when there is none.

    Raises:
        InvalidHeaderError: The header is neither RFC 3339 nor epoch milliseconds in range.
    """
    text = _text(header)
    if text is not None:
        if len(text) <= 64 and text.isascii() and text.isdigit():
            converted = _iso_from_ms(int(text)) if len(text) <= _MAX_EPOCH_DIGITS else None
            if converted is not None:
                return converted
        elif len(text) <= 64:
            try:
                datetime.fromisoformat(text)
                return text
            except ValueError:
                pass
        raise InvalidHeaderError(
            f"header captured_at {for_log(text)} is neither RFC 3339 "
            "(2026-11-29T12:00:00.123+00:00) nor epoch milliseconds in range; fix the producer, "
            "or leave the header out to use the record timestamp"
        )
    if isinstance(record_timestamp_ms, int) and record_timestamp_ms >= 0:
        return _iso_from_ms(record_timestamp_ms)
    return None


_JPEG_MAGIC = b"\xff\xd8\xff"
#: Bytes per decoded pixel (BGR or RGB uint8), for memory budgets.
BYTES_PER_PIXEL = 3


@dataclass(frozen=True)
class Decoded:
    """Outcome of decoding one value.

    Attributes:
        image: BGR pixels ``(h, w, 3)``, or, when decoded by torchvision, RGB ``(3, h, w)``
            uint8 on its device; ``None`` when the value is not an image.
        error: Why it is not (``None`` on success).
        seconds: Time spent decoding.
        kind: The dead letter's ``error_type`` when ``image`` is ``None``: ``undecodable`` or
            ``too_large``.
    """

    image: np.ndarray | torch.Tensor | None
    error: str | None
    seconds: float
    kind: ErrorType = ErrorType.UNDECODABLE


def _jpeg_tensor(data: bytes) -> torch.Tensor:
    # torchvision reads the bytes from a CPU uint8 tensor; bytearray: frombuffer wants it writable.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _check_jpeg(data: bytes, max_pixels: int | None) -> None:
    """What OpenCV's path checks before decoding, for torchvision's (truncation, pixels)."""
    check_jpeg_complete(data)
    if max_pixels is not None:
        size = image_dimensions(data)
        if size is None:
            raise ImageDecodeError(f"not a readable JPEG header ({len(data)} bytes)")
        if size[0] * size[1] > max_pixels:
            raise ImageTooLargeError(size[0], size[1], max_pixels)


def decode_timed(
    data: bytes, jpeg_device: torch.device | None = None, max_pixels: int | None = None
) -> Decoded:
    """Decode ``data`` like :func:`inspector.imaging.decode_image`, never raising.

    Args:
        data: The encoded image.
        jpeg_device: Decode JPEG with torchvision on this device (``cuda``: nvJPEG) into an
            RGB ``(3, h, w)`` tensor; ``None``, another format, or a JPEG torchvision refuses
            (nvJPEG lacks some JPEG variants that OpenCV reads): OpenCV, BGR ``(h, w, 3)``.
        max_pixels: Refuse images larger than this, from the header, before decoding.
    """
    started = time.perf_counter()
    try:
        image: np.ndarray | torch.Tensor | None = None
        if jpeg_device is not None and data[:3] == _JPEG_MAGIC:
            _check_jpeg(data, max_pixels)
            try:
                image = decode_jpeg(_jpeg_tensor(data), mode=ImageReadMode.RGB, device=jpeg_device)
            except RuntimeError as exc:
                log.debug("torchvision refused a JPEG (%s); decoding it with OpenCV", exc)
        if image is None:
            image = decode_image(data, max_pixels)
    except ImageTooLargeError as exc:
        return Decoded(None, str(exc), time.perf_counter() - started, ErrorType.TOO_LARGE)
    except ImageDecodeError as exc:
        return Decoded(None, str(exc), time.perf_counter() - started)
    except Exception as exc:  # OpenCV raising on hostile input is still bad input, not a bug
        return Decoded(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    return Decoded(image, None, time.perf_counter() - started)


def decode_jpegs(
    values: Sequence[bytes], device: torch.device, max_pixels: int | None = None
) -> list[Decoded]:
    """Decode JPEG values with torchvision in one call: one nvJPEG batch on CUDA.

    torchvision documents a list as faster than a call per image on CUDA, and returns nothing
    when any image of the list fails; then each value is decoded on its own
    (:func:`decode_timed`), so one bad frame costs its batch the batching, not its frames.

    Args:
        values: JPEG-encoded images.
        device: Where to decode (and keep) them.
        max_pixels: Refuse images larger than this, from the header, before decoding.

    Returns:
        One outcome per value, in order; a batch's time is shared equally among its frames.
    """
    if not values:
        return []
    started = time.perf_counter()
    try:
        for data in values:
            _check_jpeg(data, max_pixels)
        images = decode_jpeg(
            [_jpeg_tensor(data) for data in values], mode=ImageReadMode.RGB, device=device
        )
    except Exception as exc:  # a truncated, huge or refused image among them: find it alone
        log.debug("batched JPEG decoding failed (%s); decoding one by one", exc)
        return [decode_timed(data, device, max_pixels) for data in values]
    share = (time.perf_counter() - started) / len(values)
    return [Decoded(image, None, share) for image in images]


def decode_values(
    values: Sequence[bytes | None],
    executor: Executor,
    jpeg_device: torch.device | None,
    max_pixels: int | None = None,
) -> list[Decoded | None]:
    """Decode a poll's values: JPEG on ``jpeg_device`` as one batch, the rest on ``executor``.

    Args:
        values: Encoded images; ``None`` for a value not to decode (empty or oversized).
        executor: Thread pool for OpenCV (which releases the GIL while decoding).
        jpeg_device: Device for torchvision's JPEG decoding; ``None``: everything by OpenCV.
        max_pixels: Refuse images larger than this, from the header, before decoding.

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
        i: executor.submit(decode_timed, data, None, max_pixels)
        for i, data in enumerate(values)
        if data is not None and i not in batched
    }
    outcomes: list[Decoded | None] = [None] * len(values)
    if jpeg_device is not None and on_device:
        # On this thread, while the pool decodes the other formats.
        batch = decode_jpegs([values[i] or b"" for i in on_device], jpeg_device, max_pixels)
        for i, outcome in zip(on_device, batch, strict=True):
            outcomes[i] = outcome
    for i, future in futures.items():
        outcomes[i] = future.result()
    return outcomes


def wants_decoding(value: object, max_message_bytes: int) -> bool:
    """Whether a value goes to the decoder (empty and oversized ones are dead letters)."""
    return isinstance(value, bytes) and 0 < len(value) <= max_message_bytes


def decoded_bytes(value: bytes | None, max_pixels: int) -> int:
    """Memory the decoded value will take, from its header; 0 when it will not be decoded."""
    size = image_dimensions(value) if value else None
    if size is None or size[0] * size[1] > max_pixels:
        return 0
    return size[0] * size[1] * BYTES_PER_PIXEL


#: Called with the field (``camera_id``, ``frame_id``, ``part_id``) whenever a producer's id is
#: replaced or dropped.
InvalidIdFn = Callable[[str], None]


def _no_note(field: str) -> None:
    del field


def _id(
    raw: bytes | None,
    field: str,
    note: InvalidIdFn,
    *,
    replace: bool = True,
    rule: Callable[[str], bool] = valid_id,
) -> str | None:
    """A producer's id as text if valid; ``None`` if absent.

    ``rule`` is the daemon's one id rule (:func:`~inspector.runtime.ids.valid_id`: a camera id
    is addressed in the control API) or, for frame ids, which are only carried into results,
    :func:`~inspector.runtime.ids.valid_frame_id`. An invalid id is counted and becomes a
    stable stand-in (``replace``) or ``None`` (the caller's default then applies).
    """
    text = _text(raw[: 4 * MAX_ID_CHARS + 1] if raw is not None else None)
    if text is None or raw is None:
        return None
    if len(raw) <= 4 * MAX_ID_CHARS and rule(text):
        return text
    note(field)
    log.debug("replacing an invalid %s %s", field, for_log(text))
    return replacement_id(raw) if replace else None


def _raw_message(topic: str, partition: int, record: Any) -> RawMessage:
    """The record as received, with every field coerced to the types the DLQ writes."""
    value = record.value if isinstance(record.value, bytes) else b""
    key = record.key if isinstance(record.key, bytes) else None
    headers: list[tuple[str, bytes]] = []
    given = record.headers if isinstance(record.headers, list | tuple) else ()
    for header in given:
        if isinstance(header, tuple) and len(header) == 2 and isinstance(header[0], str):
            content = header[1]
            headers.append((header[0], content if isinstance(content, bytes) else b""))
    offset = record.offset if isinstance(record.offset, int) else -1
    return RawMessage(value, key, tuple(headers), topic, partition, offset)


def to_item(
    topic: str,
    partition: int,
    record: Any,
    decoded: Decoded | None,
    *,
    max_message_bytes: int,
    received: float,
    ack: AckFn,
    note_invalid: InvalidIdFn = _no_note,
) -> Frame | DeadLetter:
    """The frame, or the dead letter (with the original message), for one record; total.

    Args:
        topic: Record's topic.
        partition: Record's partition.
        record: kafka-python ``ConsumerRecord`` (``offset``, ``key``, ``value``, ``headers``,
            ``timestamp``).
        decoded: Its decoded value; ``None`` when it was not decoded (empty or oversized).
        max_message_bytes: The size limit, for the reason of an oversized value.
        received: Monotonic time the frame entered the pipeline.
        ack: Marks the record's offset done.
        note_invalid: Told of each id replaced because it was invalid (for a metric).

    Returns:
        A frame (ids from the headers ``frame_id``/``camera_id``, else ``topic:partition:
        offset`` and the key; the optional ``part_id`` header; invalid ids replaced, an invalid
        part id dropped, see :mod:`inspector.runtime.ids`) or a
        dead letter with error type ``empty``, ``oversized``, ``undecodable``, ``too_large``,
        ``invalid_header`` (a ``captured_at`` that is not a time) or, for anything else that
        goes wrong turning the record into a frame, ``malformed_record``.
    """
    try:
        return _to_item(
            topic, partition, record, decoded, max_message_bytes, received, ack, note_invalid
        )
    except Exception as exc:  # a parse path must be total: this record, not the thread
        log.warning(
            "record %s:%d:%s cannot be turned into a frame (%s); dead-lettering it",
            topic,
            partition,
            getattr(record, "offset", "?"),
            type(exc).__name__,
        )
        reason = f"record cannot be turned into a frame: {type(exc).__name__}: {exc}"
        failed_at = datetime.now(UTC).isoformat()
        raw = _raw_message(topic, partition, record)
        return DeadLetter(
            reason[:1000],
            ErrorType.MALFORMED_RECORD,
            FailureStage.PARSE,
            "unknown",
            raw,
            failed_at,
            ack,
        )


def _to_item(
    topic: str,
    partition: int,
    record: Any,
    decoded: Decoded | None,
    max_message_bytes: int,
    received: float,
    ack: AckFn,
    note_invalid: InvalidIdFn,
) -> Frame | DeadLetter:
    raw = _raw_message(topic, partition, record)
    headers = dict(raw.headers)
    camera = (
        _id(headers.get("camera_id"), "camera_id", note_invalid)
        or _id(raw.key, "camera_id", note_invalid)
        or "unknown"
    )
    if decoded is None or decoded.image is None:
        if not raw.value:
            kind, reason = ErrorType.EMPTY, "empty message value (no image bytes)"
        elif decoded is None:
            kind = ErrorType.OVERSIZED
            reason = (
                f"frame of {len(raw.value)} bytes exceeds kafka.max_message_bytes "
                f"({max_message_bytes})"
            )
        else:
            kind, reason = decoded.kind, decoded.error or "undecodable"
        log.debug("dead letter %s:%d:%d: %s", topic, partition, raw.offset, reason)
        failed_at = datetime.now(UTC).isoformat()
        return DeadLetter(reason, kind, FailureStage.DECODE, camera, raw, failed_at, ack)
    try:
        captured = captured_at(headers.get("captured_at"), getattr(record, "timestamp", None))
    except InvalidHeaderError as exc:
        log.debug("dead letter %s:%d:%d: %s", topic, partition, raw.offset, exc)
        failed_at = datetime.now(UTC).isoformat()
        return DeadLetter(
            str(exc), ErrorType.INVALID_HEADER, FailureStage.PARSE, camera, raw, failed_at, ack
        )
    image = decoded.image
    height, width = image.shape[-2:] if isinstance(image, torch.Tensor) else image.shape[:2]
    frame_id = _id(
        headers.get("frame_id"), "frame_id", note_invalid, replace=False, rule=valid_frame_id
    )
    # A part id is carried like a frame id (a serial such as SN/0042 must survive); an invalid
    # one is counted and dropped: a made-up stand-in would name a part that does not exist.
    part_id = _id(
        headers.get("part_id"), "part_id", note_invalid, replace=False, rule=valid_frame_id
    )
    meta = FrameMeta(
        frame_id=frame_id or f"{topic}:{partition}:{raw.offset}",
        camera_id=camera,
        image_size=(int(height), int(width)),
        source_topic=topic,
        source_partition=partition,
        source_offset=raw.offset,
        captured_at=captured,
        part_id=part_id,
        received_monotonic=received,
        decode_ms=decoded.seconds * 1e3,
    )
    return Frame(meta, image, ack, raw)
