"""What a camera object shows for one result: the verdict as the OPC UA server serves it.

Pure functions, no asyncua: the sink computes a :class:`Verdict` at the moment it writes it
(``Late`` is judged then, against the camera's ``deadline_ms``), and the server turns it into
one batch of values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from inspector.messages import ResultMessage

#: OPC UA's null ``DateTime`` (1601-01-01, 0 ticks): what ``CapturedAt`` holds when the frame
#: had no capture time.
NULL_TIME = datetime(1601, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Verdict:
    """One result of a camera, as its OPC UA variables show it (see the README's PLC section).

    Attributes:
        is_anomalous: The verdict.
        score: Normalised score (the threshold maps to 0.5).
        frame_id: The frame it is about.
        part_id: The part (the frame's ``part_id`` header); ``None``: a null string.
        captured_at: Capture time; :data:`NULL_TIME` when unknown.
        processed_at: When the verdict was made.
        late: Served after the camera's ``deadline_ms`` from capture (or already late when
            made); ``False`` without a deadline or a capture time.
        model: The model that judged it.
        defect_count: Defect regions found.
        result_count: Results of this camera served since the daemon started, this one
            included: written last, so a change of it means the whole set is new.
    """

    is_anomalous: bool
    score: float
    frame_id: str
    part_id: str | None
    captured_at: datetime
    processed_at: datetime
    late: bool
    model: str
    defect_count: int
    result_count: int


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time of a result (no zone means UTC), ``None`` when absent or unreadable."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def verdict_of(
    message: ResultMessage, served_at: datetime, deadline_ms: int | None, result_count: int
) -> tuple[Verdict, float | None]:
    """The verdict to serve for ``message`` at ``served_at``, and its capture-to-served latency.

    Args:
        message: The result.
        served_at: The moment it is written to the address space (UTC).
        deadline_ms: The camera's deadline now (``None``: none).
        result_count: The camera's count of served results, this one included.

    Returns:
        The verdict, and the seconds from capture to ``served_at`` (``None`` without a
        readable capture time).
    """
    captured = parse_time(message.captured_at)
    latency = (served_at - captured).total_seconds() if captured is not None else None
    late = bool(message.late) or (
        deadline_ms is not None and latency is not None and latency * 1000 > deadline_ms
    )
    verdict = Verdict(
        is_anomalous=message.is_anomalous,
        score=message.score,
        frame_id=message.frame_id,
        part_id=message.part_id,
        captured_at=captured or NULL_TIME,
        processed_at=parse_time(message.processed_at) or served_at,
        late=late,
        model=message.model.name,
        defect_count=len(message.defects),
        result_count=result_count,
    )
    return verdict, latency


__all__ = ["NULL_TIME", "Verdict", "parse_time", "verdict_of"]
