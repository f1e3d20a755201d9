"""Settings of every broker node, tests and deployment alike (a test holds compose to them)."""

from __future__ import annotations

from inspector.tools.apache_kafka.jars import MAX_MESSAGE_BYTES

#: Settings of every node, tests and deployment alike.
BROKER_SETTINGS: dict[str, str] = {
    # Topics come from an explicit create with partition counts, never by accident.
    "auto.create.topics.enable": "false",
    "message.max.bytes": str(MAX_MESSAGE_BYTES),
    "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
    # A daemon that restarts rejoins its group at once instead of after 3 s.
    "group.initial.rebalance.delay.ms": "0",
}


def cluster_settings(nodes: int) -> dict[str, str]:
    """Replication settings for a cluster of ``nodes``: 3 copies and 2 in sync where possible."""
    replicas = min(nodes, 3)
    min_isr = 2 if replicas >= 3 else 1
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
    }
