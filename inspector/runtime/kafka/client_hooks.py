"""Every use this package makes of kafka-python beyond its documented API, in one place.

kafka-python is the client this project is specified with, pinned to the one version these
hooks were written and tested against (:data:`WRITTEN_FOR`, ``==`` in pyproject.toml). Each
hook below says why the documented API is not enough. A leaf: imports nothing from inspector,
so the Kafka source, the sink and the daemon can all use it.

At run time every hook reads defensively: a client without the attribute (a test's fake,
another version) gets ``None``/``False``/nothing, never an exception, and the caller falls back
to what the public API offers. What fails loudly the day kafka-python renames or changes one is
``tests/integration/test_kafka_client_contract.py``, which exercises each hook on the real
client and a real broker; ``tests/unit/runtime/test_kafka_client_imports.py`` checks that every
name the package imports from ``kafka`` exists and that the installed version is the pinned one.

The hooks:

Producer (the Kafka sink)
    * :func:`sender_thread` / :func:`sender_alive`: ``producer._sender``, the thread that alone
      drives the producer's network I/O. kafka-python catches ``Exception`` in its run loop, but
      anything that escapes ends the thread silently, and then nothing the producer holds is
      ever delivered or failed; the producer has no public "is it running".
    * :func:`watch_metadata` / :func:`request_metadata`: ``producer._metadata``, the
      ``ClusterMetadata`` whose public ``add_listener``/``remove_listener``/``request_update``
      tell the sink that a broker answers again while idle. The producer hands it out only
      privately.
    * :func:`discard`: close at once, failing what the producer holds. ``close(timeout=0)``
      flushes first and raises while records are pending, leaving the producer running;
      ``Sender.force_close`` is what ``close`` does after its flush, and
      ``producer._accumulator.abort_incomplete_batches`` and ``sender._client.close`` are what
      the sender thread does last, done here for a dead one.
    * :func:`codec_available`: ``kafka.codec.has_<codec>``, undocumented. The producer checks the
      codec's library only after bootstrapping and says so with a bare ``RuntimeError``.

Consumer (the Kafka source)
    * :func:`loop_sleep`: ``consumer._net.sleep``. kafka-python 3 runs an
      ``AsyncConsumerRebalanceListener`` on its own event loop (not asyncio); a listener that
      waits must await that loop's sleep (a blocking wait would stop heartbeats).
    * :func:`fetching_partition`: ``consumer._fetcher._next_partition_records``.
      ``CorruptRecordError`` does not say which partition's record failed to parse (Java's
      ``RecordDeserializationException`` does); the fetcher keeps the partition it was reading.

Connections (``/readyz``, :mod:`inspector.runtime.kafka.diagnosis`)
    * :func:`connection_failure`: the exception objects kafka-python passes as arguments of its
      log calls. A refused SASL login or an untrusted certificate is retried like any connection
      failure, and the constructors end with "Unable to bootstrap" (``KafkaTimeoutError``, no
      cause); no connection state, callback or metric keeps the reason (the manager's private
      ``_auth_failures`` is never filled: ``KafkaConnection.initialize`` swallows the error),
      and during a constructor there is no client object to ask, so the records are the only
      channel. They are read by exception class (``kafka.errors``, ``ssl``) and by the
      transport object, never by message text.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import kafka.codec
from kafka import TopicPartition
from kafka.errors import (
    IllegalSaslStateError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)
from kafka.net.transport import KafkaTCPTransport

log = logging.getLogger(__name__)

#: The kafka-python version these hooks are written for (pyproject.toml pins exactly this).
WRITTEN_FOR = "3.0.12"
#: How long a replaced producer's sender thread may take to fail what it holds (seconds).
_FORCE_CLOSE_JOIN_S = 1.0
#: How far down an exception's cause/context chain to look for the TLS error.
_CHAIN_DEPTH = 8
#: Longest detail taken from an exception for a readiness reason.
_DETAIL_CHARS = 200


# --- producer ---------------------------------------------------------------------------------


def sender_thread(producer: Any) -> threading.Thread | None:
    """The producer's sender thread (``None`` when it has none we can see)."""
    sender = getattr(producer, "_sender", None)
    return sender if isinstance(sender, threading.Thread) else None


def sender_alive(producer: Any) -> bool | None:
    """Whether the producer's sender thread runs (``None``: cannot tell)."""
    sender = sender_thread(producer)
    return None if sender is None else sender.is_alive()


def watch_metadata(producer: Any, listener: Callable[[], None]) -> Callable[[], None] | None:
    """Call ``listener`` after each metadata response the producer applies.

    It runs on the sender thread, so it must be quick and must not block. Returns what stops
    the calls, or ``None`` when the producer offers no metadata listeners.
    """
    cluster = getattr(producer, "_metadata", None)
    add = getattr(cluster, "add_listener", None)
    remove = getattr(cluster, "remove_listener", None)
    if not callable(add) or not callable(remove):
        return None

    def heard(_cluster: object) -> None:
        # Raising here would fail kafka-python's metadata update itself.
        try:
            listener()
        except Exception:
            log.exception("kafka sink: the metadata listener failed")

    add(heard)
    return lambda: remove(heard)


def request_metadata(producer: Any) -> bool:
    """Ask for a metadata refresh now (``False``: the producer offers no way to).

    Does not wait: the answer, if a broker gives one, reaches :func:`watch_metadata`'s listener.
    kafka-python sends it on the sender thread, with its own backoff between failed tries.
    """
    cluster = getattr(producer, "_metadata", None)
    request = getattr(cluster, "request_update", None)
    if not callable(request):
        return False
    request()
    return True


def discard(producer: Any) -> None:
    """Close a producer being replaced without waiting for what it holds; never raises.

    Its records not yet acknowledged fail through their callbacks (``IllegalStateError``:
    "Producer is closed forcefully"), on its sender thread, or on this one when that thread is
    gone.
    """
    sender = sender_thread(producer)
    dead = sender is not None and not sender.is_alive()
    try:
        if dead:
            # The thread that would fail them is gone: nobody else will.
            producer._accumulator.abort_incomplete_batches()
        elif sender is not None:
            sender.force_close()  # type: ignore[attr-defined]
            sender.join(_FORCE_CLOSE_JOIN_S)
    except Exception:
        log.debug("kafka sink: failing a replaced producer's records failed", exc_info=True)
    with contextlib.suppress(Exception):
        # Marks it closed (no later send, no second close from its finaliser). Raises
        # KafkaTimeoutError if its sender thread is stuck in a blocking call: that thread fails
        # the records itself once the call returns, force_close being set.
        producer.close(timeout=0)
    if dead:
        with contextlib.suppress(Exception):
            sender._client.close()  # type: ignore[union-attr]  # its sockets: the thread's last step


def codec_available(codec: str) -> bool | None:
    """Whether kafka-python finds the library of compression ``codec`` (``None``: cannot tell).

    ``codec`` is a ``compression_type`` of ``KafkaProducer`` (gzip, snappy, lz4, zstd).
    """
    check = getattr(kafka.codec, f"has_{codec}", None)
    return bool(check()) if callable(check) else None


# --- consumer ---------------------------------------------------------------------------------


def loop_sleep(consumer: Any) -> Callable[[float], Awaitable[None]] | None:
    """The awaitable sleep of the consumer's event loop, where rebalance listeners run.

    ``None`` on a client without it: the caller must then not wait at all.
    """
    net = getattr(consumer, "_net", None)
    sleep = getattr(net, "sleep", None)
    return sleep if callable(sleep) else None


def fetching_partition(consumer: Any) -> TopicPartition | None:
    """The partition whose fetched records the consumer was parsing last (``None``: unknown).

    Right after ``poll()`` raised ``CorruptRecordError``, the partition of the record that cannot
    be parsed.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    records = getattr(fetcher, "_next_partition_records", None)
    tp = getattr(records, "topic_partition", None)
    return tp if isinstance(tp, TopicPartition) else None


# --- connections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionFailure:
    """Why kafka-python could not connect, when retrying cannot help.

    Attributes:
        kind: ``authentication`` (SASL credentials refused), ``mechanism`` (SASL mechanism not
            accepted, or SASL spoken to a listener without it), ``certificate`` (the broker's
            certificate is not trusted or not for its name) or ``tls`` (the TLS handshake
            failed otherwise, e.g. TLS spoken to a plaintext listener).
        broker: ``host:port`` of the broker, ``None`` when the record does not name it.
        detail: What the broker or the TLS library said (never a password: neither has it).
    """

    kind: str
    broker: str | None
    detail: str


def connection_failure(record: logging.LogRecord) -> ConnectionFailure | None:
    """The failure a kafka-python log record reports, ``None`` for any other record.

    kafka-python 3.0.12 logs each failed connection attempt with the exception as an argument:
    ``"Connection failed: %s"`` (``kafka.net.manager``), ``"%s: Abort (%s)"`` with the transport
    (``kafka.net.transport``), ``"%s: Connection lost: %s"`` and ``"Bootstrap connection to %s
    failed: %s ..."``. A failed TLS handshake arrives as ``KafkaConnectionError`` raised while
    handling the ``ssl.SSLError``, which is therefore its ``__context__``.
    """
    args = record.args if isinstance(record.args, tuple) else ()
    errors = [a for a in args if isinstance(a, BaseException)]
    if record.exc_info and record.exc_info[1] is not None:
        errors.append(record.exc_info[1])
    for error in errors:
        failure = _classify(error)
        if failure is not None:
            kind, detail = failure
            return ConnectionFailure(kind, _broker(args), detail[:_DETAIL_CHARS])
    return None


def _classify(error: BaseException) -> tuple[str, str] | None:
    if isinstance(error, SaslAuthenticationFailedError):
        return "authentication", _kafka_detail(error)
    if isinstance(error, UnsupportedSaslMechanismError | IllegalSaslStateError):
        return "mechanism", _kafka_detail(error)
    tls = _tls_error(error)
    if tls is None:
        return None
    # The ssl module sets reason and verify_message on the errors it raises, not on others.
    reason = getattr(tls, "reason", None) or str(tls)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return "certificate", getattr(tls, "verify_message", None) or reason
    return "tls", f"{type(tls).__name__}: {reason}"


def _tls_error(error: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = error
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _kafka_detail(error: BaseException) -> str:
    # The broker's own words when kafka-python passed them on; else the error's description.
    if error.args and error.args[0]:
        return str(error.args[0])
    return str(getattr(error, "description", "") or type(error).__name__)


def _broker(args: tuple[object, ...]) -> str | None:
    for arg in args:
        if isinstance(arg, KafkaTCPTransport):
            # The record is emitted before the transport drops its socket, so its peer is known.
            with contextlib.suppress(Exception):
                host, port = arg.getPeer()[:2]
                return f"{host}:{port}"
    return None
