"""The Kafka wing: everything that speaks to the brokers through kafka-python.

Two narrow interfaces face the data path. Records and acks come in through the consumer's
pieces (:mod:`.fetch` reads, :mod:`.consumed` turns records into frames or dead letters,
:mod:`.assignment` and :mod:`.offsets` own partitions and the committed watermark), used by
the Kafka source (:mod:`inspector.runtime.sources.kafka`). Delivery outcomes go out through the
producer (:mod:`.producer` keeps one healthy client, :mod:`.health` its link state,
:mod:`.produced` the records), used by the Kafka sink (:mod:`inspector.runtime.sinks.kafka`).
Shared by both: :mod:`.client_hooks` (every private kafka-python use, pinned and
contract-tested), :mod:`.client_metrics` and :mod:`.diagnosis` (why a broker is unreachable).

The wing imports no stage and nothing that wires stages; the stages import it.
"""
