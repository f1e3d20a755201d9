"""How the sink tells kafka-python's refusals apart at connect: by what they do, not their text.

kafka-python raises ``KafkaConfigurationError`` for idempotence refused by an old broker and for
other settings alike, and a bare ``RuntimeError`` for a codec whose library is missing; the
sink once read their messages. The producers here are the fakes of ``kafka_producer_fakes``.
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaConfigurationError
from kafka_producer_fakes import FakeProducer
from prometheus_client import CollectorRegistry

from inspector.errors import BrokerUnavailableError, ConfigError
from inspector.runtime.config import KafkaConfig
from inspector.runtime.kafka.client_hooks import codec_available
from inspector.runtime.metrics import Metrics
from inspector.runtime.sinks.kafka import KafkaSink


class RefusingFactory:
    """Refuses every producer with ``error``, idempotent or not; records what was asked."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.asked: list[bool] = []

    def __call__(self, **settings: Any) -> FakeProducer:
        self.asked.append(settings["enable_idempotence"])
        raise self.error


def _sink(factory: Any, **kafka: Any) -> KafkaSink:
    return KafkaSink(KafkaConfig(**kafka), Metrics(CollectorRegistry()), producer_factory=factory)


@pytest.mark.parametrize(
    "message",
    [
        "Must set delivery_timeout_ms higher than linger_ms + request_timeout_ms",
        # Says "idempotence" and is still not about it: the same producer without it fails too.
        "enable_idempotence=True is incompatible with user-provided retries=0",
    ],
)
def test_a_configuration_error_that_stays_without_idempotence_is_not_a_refusal_of_it(
    message: str,
) -> None:
    factory = RefusingFactory(KafkaConfigurationError(message))
    sink = _sink(factory)
    with pytest.raises(BrokerUnavailableError, match="KafkaConfigurationError") as raised:
        sink.setup()
    assert factory.asked == [True, False]  # tried without idempotence once...
    assert sink.idempotent  # ...and idempotence is not given up for it
    assert message in str(raised.value)  # the error of the producer asked for, not the retry's


def test_a_configuration_error_that_idempotence_alone_causes_falls_back() -> None:
    made: list[FakeProducer] = []

    def factory(**settings: Any) -> FakeProducer:
        if settings["enable_idempotence"]:  # whatever it says: the broker is too old for it
            raise KafkaConfigurationError("a message the sink does not read")
        made.append(FakeProducer(**settings))
        return made[-1]

    sink = _sink(factory)
    sink.setup()
    assert not sink.idempotent and len(made) == 1
    sink.close()


def test_a_codec_without_its_library_is_a_config_error_before_any_connection() -> None:
    missing = [c for c in ("snappy", "lz4", "zstd") if codec_available(c) is False]
    if not missing:
        pytest.skip("every codec's library is installed here")
    factory = RefusingFactory(AssertionError("no producer may be built"))
    sink = _sink(factory, compression=missing[0])
    with pytest.raises(ConfigError, match=rf"kafka\.compression={missing[0]}"):
        sink.setup()
    assert factory.asked == []  # no wait for a broker to learn it
