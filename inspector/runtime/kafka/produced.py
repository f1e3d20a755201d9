"""What the Kafka sink writes: the key, value and headers of results and dead letters."""

from __future__ import annotations

from dataclasses import dataclass

from inspector.messages import SCHEMA_ID
from inspector.runtime.records import DeadLetter, Inspection

#: Headers of every result record.
RESULT_HEADERS: tuple[tuple[str, bytes], ...] = (
    ("content_type", b"application/json"),
    ("schema", SCHEMA_ID.encode()),
)
#: Room left in ``max_request_size`` for record framing when a dead letter copies a payload.
_FRAMING_BYTES = 1024


@dataclass(frozen=True)
class Record:
    """One record to produce."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def result_record(inspection: Inspection) -> Record:
    """A result: JSON, keyed by camera id (one camera's results stay in order)."""
    message = inspection.message
    return Record(message.camera_id.encode(), message.to_json().encode(), list(RESULT_HEADERS))


def dead_letter_record(letter: DeadLetter, limit: int) -> Record:
    """The original message with the failure in its headers, within ``limit`` bytes.

    Headers added after the original ones (so ``dict(headers)`` sees ours): ``error``,
    ``error_type``, ``stage``, ``source_topic``, ``source_partition``, ``source_offset``
    (empty for input that did not come from Kafka) and ``failed_at``. A payload too large
    to be produced (an ``oversized`` frame) is left out, with ``value_dropped`` saying so:
    a dead letter that cannot be written would block the offset commit forever. If the
    original headers alone are too large they are left out too (``headers_dropped``).

    Args:
        letter: The dead letter.
        limit: ``kafka.max_message_bytes``.
    """
    raw = letter.raw
    key = raw.key if raw is not None else letter.camera_id.encode()
    value = raw.value if raw is not None else b""
    original = list(raw.headers) if raw is not None else []
    ours = [
        ("error", letter.reason.encode()[:4096]),
        ("error_type", letter.error_type.encode()),
        ("stage", letter.stage.encode()),
        ("source_topic", (raw.topic if raw else "").encode()),
        ("source_partition", (str(raw.partition) if raw else "").encode()),
        ("source_offset", (str(raw.offset) if raw else "").encode()),
        ("failed_at", letter.failed_at.encode()),
    ]

    def size(*parts: list[tuple[str, bytes]]) -> int:
        heads = sum(len(k.encode()) + len(v) for part in parts for k, v in part)
        return len(value) + len(key or b"") + heads + _FRAMING_BYTES

    if size(original, ours) > limit:
        ours.append(("value_dropped", f"{len(value)} bytes, over kafka.max_message_bytes".encode()))
        value = b""
    if size(original, ours) > limit:
        # Headers alone too large (a producer can send megabytes of them): the coordinates
        # in ours still find the original message on its topic.
        ours.append(("headers_dropped", f"{len(original)} headers, over the limit".encode()))
        original = []
    if len(key or b"") + _FRAMING_BYTES > limit:
        key = None
    return Record(key, value, original + ours)
