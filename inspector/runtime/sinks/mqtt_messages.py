"""What the MQTT sink publishes: topics, the result and verdict payloads, the plant's ``late``.

Pure functions of a result (no paho, no I/O), so the rules can be read and tested apart from
the connection (:mod:`inspector.runtime.sinks.mqtt`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from inspector.messages import ResultMessage


def topic_level(camera_id: str) -> str:
    """``camera_id`` as one MQTT topic level: ``+`` (a wildcard) written ``%2B``.

    Ids never hold ``/``, ``#``, ``%``, whitespace or control characters
    (:mod:`inspector.runtime.ids`), so ``+`` is the only character to escape, and since ids hold
    no ``%`` the level reads back unambiguously.
    """
    return camera_id.replace("+", "%2B")


def epoch(stamp: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (no zone: UTC); ``None`` if unreadable."""
    if stamp is None:
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def late_at(message: ResultMessage, deadline_ms: int | None, now: float) -> bool | None:
    """``late`` for the plant, judged at ``now`` (seconds since the epoch).

    True when the result's own ``late`` is (its verdict was ready after the deadline) or when
    ``deadline_ms`` from ``captured_at`` has passed by ``now``; never false where the result
    says true; ``None`` (unknown) without a deadline or a readable capture time.
    """
    captured = epoch(message.captured_at)
    if message.late or deadline_ms is None or captured is None:
        return message.late
    return (now - captured) * 1000 > deadline_ms


@dataclass(frozen=True)
class Outgoing:
    """The two messages of one result: topics and payloads."""

    result_topic: str
    result: bytes
    verdict_topic: str
    verdict: bytes


def outgoing(message: ResultMessage, prefix: str, late: bool | None) -> Outgoing:
    """The result (the Kafka sink's JSON, ``late`` as given) and its verdict, for ``prefix``.

    The verdict is what a PLC acts on: ``frame_id``, ``camera_id``, ``part_id``,
    ``is_anomalous``, ``score``, ``late``, ``captured_at``, ``processed_at`` and the model's
    name.
    """
    result = message if late == message.late else message.model_copy(update={"late": late})
    verdict = {
        "frame_id": message.frame_id,
        "camera_id": message.camera_id,
        "part_id": message.part_id,
        "is_anomalous": message.is_anomalous,
        "score": message.score,
        "late": late,
        "captured_at": message.captured_at,
        "processed_at": message.processed_at,
        "model": message.model.name,
    }
    base = f"{prefix}/{topic_level(message.camera_id)}"
    return Outgoing(
        f"{base}/result", result.to_json().encode(), f"{base}/verdict", json.dumps(verdict).encode()
    )
