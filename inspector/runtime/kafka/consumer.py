"""The consumer's settings and the figures it reports, independent of the source's lifecycle.

:func:`consumer_settings` is every keyword ``KafkaConsumer`` gets (the one place the client is
configured); :func:`partition_lags` reads each owned partition's lag without a broker round
trip. The Kafka source (:mod:`inspector.runtime.sources.kafka`) owns the client and calls these.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from inspector.runtime.config import KafkaConfig, KafkaSourceConfig
from inspector.runtime.kafka.offsets import OffsetTracker

#: Fetch headroom over ``max_message_bytes`` for record-batch framing and headers, so that a
#: frame of exactly the limit is fetched whole.
FETCH_OVERHEAD_BYTES = 64 * 1024
#: kafka-python's default total fetch size; raised when one message may be larger.
DEFAULT_FETCH_MAX_BYTES = 50 * 1024 * 1024
#: How often the consumer refreshes cluster metadata (new topics, partitions, leaders).
METADATA_MAX_AGE_MS = 30_000


def consumer_settings(kafka: KafkaConfig, config: KafkaSourceConfig) -> dict[str, Any]:
    """Keyword settings for ``KafkaConsumer`` (secrets included: never log them)."""
    partition_fetch = kafka.max_message_bytes + FETCH_OVERHEAD_BYTES
    return {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": kafka.client_id,
        "group_id": kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "request_timeout_ms": kafka.request_timeout_ms,
        "max_poll_records": config.max_poll_records,
        "fetch_max_wait_ms": config.fetch_max_wait_ms,
        # Size limits live in the client: a broker may have none (the test broker).
        "max_partition_fetch_bytes": partition_fetch,
        "fetch_max_bytes": max(DEFAULT_FETCH_MAX_BYTES, partition_fetch),
        # A group that forms before a new topic's metadata reaches the leader assigns
        # nothing of it (Apache Kafka answers CreateTopics before publishing it) until the
        # leader's next metadata refresh: 30 s instead of kafka-python's 5 minutes.
        "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        **kafka.client_security_settings(),
    }


def partition_lags(
    consumer: KafkaConsumer, tracker: OffsetTracker[TopicPartition]
) -> dict[TopicPartition, int]:
    """Records behind the end of each assigned partition, where both ends are known.

    ``highwater()`` comes with every fetch response and is right on Tansu too, unlike
    ``end_offsets()``. Lag is measured from the committed position (what a restart would
    re-read), falling back to the fetch position before the first record.
    """
    lags: dict[TopicPartition, int] = {}
    for tp in consumer.assignment():
        try:
            highwater = consumer.highwater(tp)
            base = tracker.committed(tp)
            if base is None and highwater is not None:
                base = consumer.position(tp, timeout_ms=0)
        except (KafkaError, OSError):
            continue
        if highwater is not None and base is not None:
            lags[tp] = max(0, highwater - base)
    return lags
