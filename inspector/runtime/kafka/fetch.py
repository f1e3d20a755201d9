"""What can go wrong with a whole fetch rather than one record, and how a poll stays bounded.

Pure helpers of :class:`inspector.runtime.sources.kafka.KafkaSource`: finding the record the client
cannot parse, its dead letter, and how many of a poll's records fit its decoded-byte budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from inspector.dead_letters import ErrorType, FailureStage
from inspector.runtime.kafka.client_hooks import fetching_partition
from inspector.runtime.kafka.consumed import decoded_bytes
from inspector.runtime.records import AckFn, DeadLetter, RawMessage


def failing_partition(consumer: KafkaConsumer) -> TopicPartition | None:
    """The partition whose records the consumer failed to parse, or ``None`` if unknown.

    kafka-python 3.0's ``CorruptRecordError`` does not carry the partition (Java's
    ``RecordDeserializationException`` does); its fetcher keeps the partition it was reading,
    privately (:func:`~inspector.runtime.kafka.client_hooks.fetching_partition`). Without it,
    the only partition being fetched, when there is just one.
    """
    tp = fetching_partition(consumer)
    if tp is not None:
        return tp
    fetching = set(consumer.assignment()) - set(consumer.paused())
    return fetching.pop() if len(fetching) == 1 else None


def unreadable_record(tp: TopicPartition, offset: int, error: Exception, ack: AckFn) -> DeadLetter:
    """The dead letter of a record the client cannot read: its coordinates, no payload."""
    return DeadLetter(
        f"the Kafka client cannot read this record: {error}",
        ErrorType.CORRUPT_RECORD,
        FailureStage.FETCH,
        "unknown",
        RawMessage(b"", None, (), tp.topic, tp.partition, offset),
        datetime.now(UTC).isoformat(),
        ack,
    )


def within_budget(
    records: Sequence[tuple[TopicPartition, Any]], budget: int, max_pixels: int
) -> tuple[int, dict[TopicPartition, int]]:
    """How many leading records fit ``budget`` decoded bytes, and where to fetch the rest from.

    Args:
        records: A poll's records, in order, grouped by partition.
        budget: Decoded bytes the poll may hold (at least one record is always taken).
        max_pixels: Images over this are not decoded and count nothing.

    Returns:
        ``(n, rewind)``: take ``records[:n]``; seek each partition in ``rewind`` back to its
        offset so that the next poll fetches the rest again.
    """
    total = 0
    for i, (_, record) in enumerate(records):
        value = record.value if isinstance(record.value, bytes) else None
        total += decoded_bytes(value, max_pixels)
        if total > budget and i > 0:
            rewind: dict[TopicPartition, int] = {}
            for tp, later in records[i:]:
                rewind.setdefault(tp, later.offset)
            return i, rewind
    return len(records), {}
