"""How the daemon wires retention, labels and the console's live data (kept out of daemon.py).

The daemon makes one :class:`ResultsWiring`; it adds two sinks to the configured ones (the
retention sink when ``retention.enabled``, and the small last-result-per-camera sink the
console's tiles read), hands the HTTP app a :class:`~inspector.runtime.control.api_results.
ResultsAccess` (the open retention index, the label publisher, the cameras' activity) and
closes the label publisher at shutdown.
"""

from __future__ import annotations

from inspector.label_messages import LabelMessage
from inspector.runtime.config import InspectorConfig
from inspector.runtime.control.api_errors import DaemonStartingError
from inspector.runtime.control.api_results import ResultsAccess
from inspector.runtime.control.labels import (
    LabelMetrics,
    LabelPublisher,
    once_per_registry,
    producer_settings,
)
from inspector.runtime.metrics import Metrics
from inspector.runtime.retention.reader import RetentionIndex
from inspector.runtime.sinks.base import Sink
from inspector.runtime.sinks.latest import LatestResults
from inspector.runtime.sinks.retention import RetentionMetrics, RetentionSink


class ResultsWiring:
    """Retention, labels and the cameras' activity for one daemon.

    Args:
        config: The daemon's configuration (``retention``, ``kafka``, ``sinks.kafka``).
        metrics: The daemon's metrics; retention and label metrics register on its registry,
            once per registry.
    """

    def __init__(self, config: InspectorConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.latest = LatestResults(metrics.camera)
        self.retention: RetentionSink | None = None
        # Labels go to Kafka when results do: the same brokers, a producer of their own.
        self.publisher: LabelPublisher | None = None
        if config.retention.enabled and config.sinks.kafka.enabled:
            self.publisher = LabelPublisher(
                config.kafka,
                once_per_registry(metrics.registry, LabelMetrics),
                producer_settings(config.kafka, metrics),
            )

    def sinks(self) -> list[Sink]:
        """The sinks to add to the configured ones (built once; set up by the daemon)."""
        made: list[Sink] = [self.latest]
        if self.config.retention.enabled:
            if self.retention is None:
                self.retention = RetentionSink(
                    self.config.retention,
                    once_per_registry(self.metrics.registry, RetentionMetrics),
                )
            made.append(self.retention)
        return made

    def index(self) -> RetentionIndex | None:
        """The open retention index; ``None`` when retention is off.

        Raises:
            DaemonStartingError: Retention is on but its folder is not open (yet, or any more).
        """
        if not self.config.retention.enabled:
            return None
        sink = self.retention
        if sink is None or not sink.ready():
            raise DaemonStartingError(
                "retention is not open: the daemon is starting or stopping (try again once "
                "/readyz is 200)"
            )
        return sink.store

    def publish(self, message: LabelMessage) -> None:
        """Hand a label to the Kafka publisher, if labels go to Kafka."""
        if self.publisher is not None:
            self.publisher.publish(message)

    def access(self) -> ResultsAccess:
        """What the HTTP app reads."""
        return ResultsAccess(
            retention=self.index,
            publish=self.publish,
            activity=self.latest.cameras,
            good_sample_rate=self.config.retention.good_sample_rate,
        )

    def close(self) -> None:
        """Send the labels still queued (briefly) and close the label producer."""
        if self.publisher is not None:
            self.publisher.close()


__all__ = ["ResultsWiring"]
