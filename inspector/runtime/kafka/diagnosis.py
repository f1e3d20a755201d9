"""Why the Kafka client cannot connect, when the reason is a setting (credentials, TLS).

kafka-python retries a refused SASL login or an untrusted certificate like any connection
failure: its constructors block for ``request_timeout_ms`` and then raise "unable to
bootstrap", and a running client reconnects for ever. The cause reaches only its own log
records, as the exception objects it logs, so this handler, on the ``kafka`` logger, hands each
record to :func:`~inspector.runtime.kafka.client_hooks.connection_failure` (which reads those
objects by class, never the message text) and turns the failures that no retry will fix into a
reason for ``/readyz`` and one error line of ours, rate-limited, naming the broker, the
mechanism and the setting to fix. The password is never part of either: it is not in
kafka-python's exceptions, and ours are built from the configuration's other fields.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from inspector.runtime.config import KafkaConfig
from inspector.runtime.kafka.client_hooks import connection_failure
from inspector.runtime.pacing import RateLimitedLog

log = logging.getLogger(__name__)

#: A problem not seen again for this long is considered gone (seconds).
_FORGET_AFTER_S = 60.0
#: Repeat our error line at most this often (seconds).
_LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Problem:
    """A connection failure that needs a change of configuration."""

    kind: str
    broker: str
    detail: str
    seen: float


class ConnectionDiagnosis(logging.Handler):
    """Reads kafka-python's log records for failures that need a change of configuration.

    Args:
        kafka: The connection settings (for the names in the messages; never the password).
        clock: Monotonic clock.
    """

    def __init__(self, kafka: KafkaConfig, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(level=logging.WARNING)
        self.kafka = kafka
        self._clock = clock
        self._problem: Problem | None = None
        self._lock = threading.Lock()
        self._errors = RateLimitedLog(log, _LOG_EVERY_S, clock)

    def emit(self, record: logging.LogRecord) -> None:
        """Note a record that says why a connection failed (never raises)."""
        try:
            failure = connection_failure(record)
            if failure is None:
                return
            with self._lock:
                previous = self._problem
            broker = failure.broker
            if broker is None and previous is not None and previous.kind == failure.kind:
                broker = previous.broker  # the same failure, logged again without its transport
            problem = Problem(
                failure.kind,
                broker or self.kafka.bootstrap_servers,
                failure.detail,
                self._clock(),
            )
            with self._lock:
                self._problem = problem
            self._errors.error("%s", self._describe(problem))
        except Exception:  # a log handler must never break the caller's logging
            self.handleError(record)

    def reason(self) -> str | None:
        """The current problem as a readiness reason (``None``: none seen lately)."""
        with self._lock:
            problem = self._problem
        if problem is None or self._clock() - problem.seen > _FORGET_AFTER_S:
            return None
        return self._describe(problem)

    def _describe(self, problem: Problem) -> str:
        k = self.kafka
        if problem.kind == "authentication":
            return (
                f"kafka: SASL authentication to {problem.broker} failed (mechanism "
                f"{k.sasl_mechanism}, user {k.sasl_username!r}, {k.security_protocol}): "
                f"{problem.detail}; check kafka.sasl_username and INSPECTOR_KAFKA__SASL_PASSWORD"
            )
        if problem.kind == "mechanism":
            return (
                f"kafka: {problem.broker} does not accept SASL mechanism {k.sasl_mechanism} "
                f"({problem.detail}); check kafka.sasl_mechanism"
            )
        if problem.kind == "certificate":
            return (
                f"kafka: TLS to {problem.broker} failed, its certificate is not trusted "
                f"(certificate verify failed: {problem.detail}; {k.security_protocol}, "
                f"mechanism {k.sasl_mechanism}); check kafka.ssl_cafile ({k.ssl_cafile})"
            )
        return (
            f"kafka: TLS to {problem.broker} failed ({problem.detail}; {k.security_protocol}); "
            "check kafka.security_protocol and kafka.ssl_cafile"
        )
