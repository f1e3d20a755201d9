"""Apache Kafka (KRaft) as local JVM processes: one node or a 3-broker cluster, for tests and dev.

The broker's jars come from Maven Central (``org.apache.kafka:kafka_2.13``, the version of
``deploy/compose.yaml``'s image), fetched once with Maven into a cache outside the checkout
(``$INSPECTOR_KAFKA_CACHE``, default ``~/.cache/inspector/kafka-VERSION``). Each node is a
combined broker and controller on free loopback ports with its own data directory, so a node
killed with SIGKILL can be started again with its data: what the fault tests need.

    python -m inspector.tools.apache_kafka                 # one node; prints its address
    python -m inspector.tools.apache_kafka --nodes 3       # replication 3, min.insync.replicas 2
    python -m inspector.tools.apache_kafka --fetch-only    # just fill the cache (make kafka)

The settings every node gets are :data:`BROKER_SETTINGS` (with the replication ones from
:func:`cluster_settings`); ``deploy/compose.yaml`` and the k8s notes use the same values, and a
test holds them together.
"""

from inspector.tools.apache_kafka.cluster import KafkaCluster, KafkaNode
from inspector.tools.apache_kafka.jars import (
    KAFKA_VERSION,
    MAX_MESSAGE_BYTES,
    SCALA_VERSION,
    KafkaLaunchError,
    cache_dir,
    fetch_jars,
)
from inspector.tools.apache_kafka.settings import BROKER_SETTINGS, cluster_settings

__all__ = [
    "BROKER_SETTINGS",
    "KAFKA_VERSION",
    "MAX_MESSAGE_BYTES",
    "SCALA_VERSION",
    "KafkaCluster",
    "KafkaLaunchError",
    "KafkaNode",
    "cache_dir",
    "cluster_settings",
    "fetch_jars",
]
