"""Results and verdicts to the plant's MQTT broker at QoS 1 (``sinks.mqtt``, the ``plant`` extra).

Each result goes to ``<prefix>/<camera>/result`` (QoS 1, the Kafka sink's JSON, see below for
``late``) and its verdict to ``<prefix>/<camera>/verdict`` (QoS 1, retained, so a PLC or SCADA
that subscribes gets the camera's last verdict at once). A result counts as delivered, and its
frame may be acknowledged (its Kafka offset committed), only once the broker has sent the
PUBACK of both messages. Dead letters are not published here: they stay on Kafka.

**Late.** The payload is the result exactly as the Kafka sink publishes it
(:meth:`~inspector.messages.ResultMessage.to_json`) but for ``late``, judged again when the
message is handed to the broker: true when the result's own ``late`` is (the verdict was ready
after the camera's ``deadline_ms``) or when the deadline had passed by the time the sink sent
it (a frame held back while the broker was away). It is never false where the result said
true, and null where the camera has no deadline or the frame no capture time. The PUBACK's
moment is known only after the message left: ``inspector_plant_latency_seconds{sink="mqtt"}``
measures capture to PUBACK and ``inspector_plant_late_total{sink="mqtt"}`` counts the results
whose PUBACK came after the deadline.

**When the broker is away.** paho-mqtt runs its own network thread and reconnects with
backoff (1 s doubling up to ``reconnect_max_s``). Messages already sent stay in the client
(MQTT 5 session, ``session_expiry_s``) and are sent again after the reconnect; new results are
refused while the client is disconnected, so the delivery layer holds their frames back and
retries with its backoff (the client never piles up an outage's worth of messages; it holds
``max_queued`` at most), and ``/readyz`` says why. Duplicates are possible (at least once):
a message resent after a reconnect, or a result sent again with its verdict.

A ``+`` in a camera id (an MQTT wildcard) is written ``%2B`` in topics; the topics and
payloads are built by :mod:`inspector.runtime.sinks.mqtt_messages`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspector.errors import ConfigError, InspectorError, RecordRefusedError
from inspector.runtime.config import MqttSinkConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import RateLimitedLog
from inspector.runtime.records import Inspection
from inspector.runtime.sinks.base import DoneFn, Sink
from inspector.runtime.sinks.mqtt_client import import_paho, probe, tls_context
from inspector.runtime.sinks.mqtt_messages import epoch, late_at, outgoing

log = logging.getLogger(__name__)

#: The ``sink`` label of this sink's plant metrics.
PLANT_SINK = "mqtt"
#: MQTT 5 reason codes of a PUBACK that refuse the message itself: sending it again cannot help.
_REFUSING_CODES = frozenset({0x90, 0x95, 0x99})  # topic name invalid, too large, bad payload
#: Bytes of a PUBLISH packet besides its topic and payload (header, length, id, properties).
_PACKET_OVERHEAD = 16
#: How long :meth:`MqttSink.close` waits for acknowledgements still due.
_CLOSE_FLUSH_S = 2.0
#: Cameras whose newest verdict time is remembered (the oldest noted is forgotten beyond).
_MAX_CAMERAS = 4096


def _no_deadline(_: str) -> int | None:
    return None


@dataclass
class _Delivery:
    """One result on its way: its messages' acknowledgements and its ``done``."""

    done: DoneFn
    captured: float | None  # capture time, seconds since the epoch
    deadline_ms: int | None
    remaining: int
    settled: bool = False


@dataclass(frozen=True)
class _Sent:
    """One message handed to the client and not yet acknowledged."""

    delivery: _Delivery
    topic: str
    sent_at: float  # monotonic


class MqttSink(Sink):
    """Publishes each result and its retained verdict at QoS 1; done on both PUBACKs.

    ``done`` is called exactly once per result: from paho's network thread when the broker
    acknowledged both messages (or refused one), at once when the client is disconnected or
    full, or by :meth:`close` for messages still unacknowledged.

    Args:
        config: ``sinks.mqtt`` (its ``host`` must be set).
        metrics: Where the plant latency and late PUBACKs are counted.
        deadline_ms: A camera's ``deadline_ms`` (``None``: none), e.g. ``Recipes.deadline_ms``.
        clock: Monotonic clock (stalls, readiness).
        wall_clock: Seconds since the epoch (capture times are wall times).

    Raises:
        ConfigError: No host, or paho-mqtt (the ``plant`` extra) is not installed.
    """

    name = "mqtt"

    def __init__(
        self,
        config: MqttSinkConfig,
        metrics: Metrics,
        *,
        deadline_ms: Callable[[str], int | None] = _no_deadline,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if config.host is None:
            raise ConfigError("sinks.mqtt.host: no broker given")
        self._paho = import_paho()
        self.config = config
        self.metrics = metrics
        # At zero from the start: the first late verdict is then an increase rate() sees.
        metrics.plant_late.labels(sink=PLANT_SINK)
        metrics.plant_latency.labels(sink=PLANT_SINK)
        self.where = f"mqtt sink ({config.host}:{config.effective_port})"
        self._deadline_ms = deadline_ms
        self._clock = clock
        self._wall_clock = wall_clock
        self._client: Any = None
        self._lock = threading.Condition()  # pending, early, connection state
        self._pending: dict[int, _Sent] = {}
        self._early: dict[int, Any] = {}  # PUBACKs that came before publish() returned the mid
        self._order = threading.Lock()  # publishing and the newest verdict per camera, together
        self._newest: dict[str, float] = {}
        self._connected = False
        self._closed = False
        self._problem = "not connected yet"
        self._since = clock()
        self._max_packet: int | None = None
        self._warnings = RateLimitedLog(log, 60.0, clock)

    # --- connection ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Build the client and start its network thread; connect once now if the broker answers.

        A broker that does not answer yet is not an error: the client keeps trying with backoff
        and frames wait meanwhile (``/readyz`` says so).

        Raises:
            ConfigError: A TLS file cannot be read, or the broker's certificate is not trusted
                (``sinks.mqtt.tls``).
        """
        if self._client is not None:
            return
        mqtt, cfg = self._paho, self.config
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"inspector-{socket.gethostname()}",
            protocol=mqtt.MQTTv5,
        )
        if cfg.username is not None:
            password = cfg.password.get_secret_value() if cfg.password is not None else None
            client.username_pw_set(cfg.username, password)
        context = tls_context(cfg.tls) if cfg.tls is not None else None
        if context is not None:
            client.tls_set_context(context)
        client.max_inflight_messages_set(cfg.max_in_flight)
        client.max_queued_messages_set(cfg.max_queued)
        client.reconnect_delay_set(1, cfg.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        # A callback that raises must not end paho's network thread: logged there instead.
        client.suppress_exceptions = True
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        properties = self._paho.Properties(self._paho.PacketTypes.CONNECT)
        properties.SessionExpiryInterval = cfg.session_expiry_s
        problem = probe(cfg, context, self.where)
        if problem is not None:
            self._note_problem(f"cannot connect: {problem}")
            log.warning("%s: cannot connect (%s); retrying in the background", self.where, problem)
        client.connect_async(
            cfg.host,
            cfg.effective_port,
            keepalive=cfg.keepalive_s,
            clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client = client
        client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            hint = ""
            if reason.value in (0x86, 0x87, 0x8C):  # bad user name or password, not authorized
                hint = " (check sinks.mqtt.username and INSPECTOR_SINKS__MQTT__PASSWORD)"
            self._note_problem(f"the broker refused the connection: {reason}{hint}")
            self._warnings.error(
                "%s: the broker refused the connection: %s%s", self.where, reason, hint
            )
            return
        maximum = getattr(properties, "MaximumPacketSize", None)
        with self._lock:
            self._connected = True
            self._max_packet = int(maximum) if maximum is not None else None
        log.info("%s: connected", self.where)

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        with self._lock:
            # Never connected (a refused CONNACK closes the connection): its reason stands.
            if self._closed or not self._connected:
                return
        self._note_problem(f"connection lost: {reason}")
        self._warnings.warning(
            "%s: connection lost (%s); reconnecting, unacknowledged messages are sent again",
            self.where,
            reason,
        )

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self._note_problem("cannot connect (no answer, refused or TLS failed)")

    def _note_problem(self, problem: str) -> None:
        with self._lock:
            if self._connected:
                self._since = self._clock()
            self._connected = False
            self._problem = problem

    def ready(self) -> bool:
        """Connected, and no message waits longer than ``publish_stall_ms`` for its PUBACK."""
        return self.unready_reason() is None

    def unready_reason(self) -> str | None:
        """Why the sink cannot deliver now (``None`` when it can); changes nothing."""
        now = self._clock()
        with self._lock:
            if self._closed:
                return f"{self.where}: closed"
            if not self._connected:
                return (
                    f"{self.where}: {self._problem} for {now - self._since:.0f} s; frames are "
                    "held back and retried, their offsets stay uncommitted"
                )
            if not self._pending:
                return None
            oldest = min(self._pending.values(), key=lambda s: s.sent_at)
            count = len(self._pending)
        waited = now - oldest.sent_at
        if waited * 1000 < self.config.publish_stall_ms:
            return None
        return (
            f"{self.where}: {count} message(s) without PUBACK, the oldest to {oldest.topic} for "
            f"{waited:.0f} s (sinks.mqtt.publish_stall_ms); their frames stay uncommitted"
        )

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Send the result and its retained verdict; ``done`` once the broker acknowledged both."""
        message = inspection.message
        with self._lock:
            client, closed = self._client, self._closed
            connected, problem, max_packet = self._connected, self._problem, self._max_packet
        if client is None or closed or not connected:
            done(InspectorError(f"{self.where}: {'closed' if closed else problem}"))
            return
        try:
            deadline = self._deadline_ms(message.camera_id)
        except Exception as exc:  # a lookup must not lose the frame: judge without a deadline
            self._warnings.error("%s: deadline lookup failed: %r", self.where, exc)
            deadline = None
        out = outgoing(
            message, self.config.topic_prefix, late_at(message, deadline, self._wall_clock())
        )
        size = len(out.result) + len(out.result_topic) + _PACKET_OVERHEAD
        if max_packet is not None and size > max_packet:
            done(
                RecordRefusedError(
                    f"{self.where}: a result of {len(out.result)} bytes is over the broker's "
                    f"maximum packet size ({max_packet}); raise the broker's limit or set "
                    "postprocess.include_mask: false"
                )
            )
            return
        delivery = _Delivery(done, epoch(message.captured_at), deadline, remaining=0)
        processed = epoch(message.processed_at) or 0.0
        with self._order:
            # A retried result must not replace a newer verdict the broker retains.
            newest = self._newest.get(message.camera_id)
            messages = [(out.result_topic, out.result, False)]
            if newest is None or processed >= newest:
                messages.append((out.verdict_topic, out.verdict, True))
                self._remember(message.camera_id, processed)
            delivery.remaining = len(messages)
            for topic, body, retain in messages:
                if not self._send(client, delivery, topic, body, retain):
                    break

    def _remember(self, camera_id: str, processed: float) -> None:
        """Note the camera's newest verdict; bounded, as camera ids from Kafka are."""
        self._newest.pop(camera_id, None)
        self._newest[camera_id] = processed
        if len(self._newest) > _MAX_CAMERAS:
            del self._newest[next(iter(self._newest))]

    def _send(
        self, client: Any, delivery: _Delivery, topic: str, body: bytes, retain: bool
    ) -> bool:
        """Hand one message to the client; ``False`` (delivery failed) if it did not take it."""
        mqtt = self._paho
        try:
            info = client.publish(topic, body, qos=1, retain=retain)
        except ValueError as exc:  # a topic or payload MQTT cannot carry: this record only
            self._fail(delivery, RecordRefusedError(f"{self.where}: {topic}: {exc}"))
            return False
        except Exception as exc:  # the client in a state it refuses: try again later
            self._fail(delivery, InspectorError(f"{self.where}: {topic}: {exc!r}"))
            return False
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN: kept by the client and sent after the reconnect; anything else (the
            # client is full): not taken, the delivery layer tries the result again later.
            reason = mqtt.error_string(info.rc)
            self._fail(delivery, InspectorError(f"{self.where}: not taken: {reason}"))
            return False
        sent = _Sent(delivery, topic, self._clock())
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = sent
                return True
        self._acknowledged(sent, early)
        return True

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        """A PUBACK (paho's network thread); never raises, which would end that thread."""
        try:
            with self._lock:
                sent = self._pending.pop(mid, None)
                if sent is None:
                    if not self._closed:
                        self._early[mid] = reason
                    return
                self._lock.notify_all()
            self._acknowledged(sent, reason)
        except Exception:
            log.exception("%s: handling a PUBACK failed", self.where)

    def _acknowledged(self, sent: _Sent, reason: Any) -> None:
        delivery = sent.delivery
        if reason.is_failure:
            what = f"{self.where}: the broker refused the message to {sent.topic}: {reason}"
            if reason.value in _REFUSING_CODES:
                self._fail(delivery, RecordRefusedError(what))
            else:  # not authorized, quota exceeded...: may pass once the broker is fixed
                self._warnings.error("%s", what)
                self._fail(delivery, InspectorError(what))
            return
        with self._lock:
            if delivery.settled:
                return
            delivery.remaining -= 1
            if delivery.remaining > 0:
                return
            delivery.settled = True
        if delivery.captured is not None:
            age = self._wall_clock() - delivery.captured
            self.metrics.plant_latency.labels(sink=PLANT_SINK).observe(max(0.0, age))
            if delivery.deadline_ms is not None and age * 1000 > delivery.deadline_ms:
                self.metrics.plant_late.labels(sink=PLANT_SINK).inc()
        delivery.done(None)

    def _fail(self, delivery: _Delivery, exc: BaseException) -> None:
        """End a delivery with ``exc`` (once); its other messages' PUBACKs are then ignored."""
        with self._lock:
            if delivery.settled:
                return
            delivery.settled = True
        delivery.done(exc)

    # --- shutdown -----------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until every message sent so far is acknowledged; ``False`` on timeout."""
        end = self._clock() + timeout
        with self._lock:
            while self._pending:
                left = end - self._clock()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """Wait briefly for PUBACKs, disconnect; what is still unacknowledged fails via ``done``."""
        if self._client is not None and not self._closed:
            self.flush(_CLOSE_FLUSH_S)
        with self._lock:
            self._closed = True
            stale = list(self._pending.values())
            self._pending.clear()
            self._early.clear()
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        for sent in stale:
            self._fail(sent.delivery, InspectorError(f"{self.where}: closed before the PUBACK"))
