"""Settings of the sinks: the ``sinks`` section of the daemon's configuration.

A leaf like :mod:`inspector.runtime.config`, which re-exports these names (import them from
there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from inspector.model.config import Frozen


class KafkaSinkConfig(Frozen):
    """Results (and dead letters) to Kafka; topics and connection in ``kafka``.

    Attributes:
        enabled: Publish results to ``kafka.results_topic``.
    """

    enabled: bool = True


class JsonlSinkConfig(Frozen):
    """Results appended to a JSON-lines file.

    Attributes:
        path: File to append to; ``None`` disables.
    """

    path: Path | None = None


class OverlaySinkConfig(Frozen):
    """Heat-map overlays of anomalous frames saved to a folder, bounded.

    Attributes:
        directory: Folder; ``None`` disables.
        max_files: Oldest files are deleted beyond this count.
        max_bytes: ...or beyond this total size.
    """

    directory: Path | None = None
    max_files: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)


#: Characters an MQTT topic prefix may not hold: the wildcards, which a published topic name
#: cannot contain, and NUL.
_NOT_IN_TOPICS = frozenset("+#\x00")


class MqttTlsConfig(Frozen):
    """TLS to the MQTT broker (``sinks.mqtt.tls``); the broker's certificate is always verified.

    Attributes:
        ca_file: PEM bundle of the CA(s) that signed the broker's certificate (``None``: the
            system's trust store).
        cert_file: The daemon's client certificate (PEM), for brokers that require one.
        key_file: Its private key (PEM, unencrypted); given together with ``cert_file``.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together (a client certificate)")
        return self


class MqttSinkConfig(Frozen):
    """Results and verdicts to an MQTT broker at QoS 1 (:mod:`inspector.runtime.sinks.mqtt`).

    Needs the ``plant`` extra (paho-mqtt). QoS is 1 by design: a frame is acknowledged (its
    offset committed) only after the broker's PUBACK, so there is no QoS setting.

    Attributes:
        host: The broker's host name or address; ``None`` disables the sink.
        port: Its port (``None``: 8883 with ``tls``, 1883 without).
        client_id: The MQTT client id, unique per daemon replica: the broker keeps this
            client's session (in-flight messages) under it, and a second client with the same
            id disconnects the first (``None``: ``inspector-<host name>``).
        topic_prefix: Results go to ``<prefix>/<camera>/result``, the last verdict (retained)
            to ``<prefix>/<camera>/verdict``.
        username: User name for the broker (``None``: anonymous).
        password: Its password (secret, never logged; ``INSPECTOR_SINKS__MQTT__PASSWORD``).
        tls: TLS settings; ``None``: plain TCP (only on a network you trust).
        keepalive_s: MQTT keep-alive: a broker gone silent is noticed within 1.5 times this.
        max_in_flight: QoS 1 messages sent and not yet acknowledged, at most (more wait in
            the client, in order).
        max_queued: Messages the client holds at most (in flight and waiting); beyond it a
            publish fails and the delivery layer retries it with backoff.
        session_expiry_s: How long the broker keeps the session after a disconnect (MQTT 5).
        reconnect_max_s: Longest wait between two connection attempts (from 1 s, doubling).
        publish_stall_ms: A message unacknowledged this long while connected makes ``/readyz``
            503 (the frames stay uncommitted until the PUBACK comes).
    """

    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    topic_prefix: str = Field(default="inspector", min_length=1, max_length=256)
    username: str | None = None
    password: SecretStr | None = None
    tls: MqttTlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    max_in_flight: int = Field(default=64, ge=1, le=65535)
    max_queued: int = Field(default=1024, ge=2, le=60000)
    session_expiry_s: int = Field(default=3600, ge=0)
    reconnect_max_s: int = Field(default=30, ge=1, le=3600)
    publish_stall_ms: int = Field(default=10_000, ge=100)

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        if not _NOT_IN_TOPICS.isdisjoint(prefix) or not prefix.isprintable():
            raise ValueError(
                "a topic prefix holds no + or # (MQTT wildcards) and no control characters"
            )
        if prefix.startswith(("/", "$")) or prefix.endswith("/") or "//" in prefix:
            raise ValueError(
                "a topic prefix does not start with / or $ (broker topics), end with / or hold "
                "an empty level (//), e.g. plant/line1"
            )
        return prefix

    @property
    def effective_port(self) -> int:
        """The port to connect to: ``port``, else MQTT's default for TLS or plain TCP."""
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883


#: OPC UA message security modes, all with the ``Basic256Sha256`` policy except ``none``.
OpcuaSecurityMode = Literal["sign", "sign_and_encrypt", "none"]


class OpcuaSinkConfig(Frozen):
    """The OPC UA server for PLCs (:mod:`inspector.runtime.sinks.opcua`); ``plant`` extra.

    Every camera's last verdict, served under ``namespace_uri`` (see the README's *Wiring a
    PLC*). Secure by default: ``Basic256Sha256`` with the daemon's certificate, clients whose
    certificate is in ``trusted_clients_dir``, users with passwords. Unencrypted connections
    and anonymous clients only when listed here explicitly.

    Attributes:
        enabled: Serve the verdicts.
        host: Address to listen on (``0.0.0.0``: every interface).
        port: TCP port (4840 is OPC UA's).
        namespace_uri: The namespace of the inspector's nodes (its index is looked up by
            clients, e.g. ``nsu=<uri>;s=Cameras/line1/IsAnomalous``).
        application_uri: The server's application URI; ``None``: the URI in the certificate's
            subject alternative name (OPC UA clients check that the two are the same).
        certificate_file: The daemon's application certificate (DER or PEM), with its
            application URI as a URI subject alternative name.
        private_key_file: Its private key (PEM or DER).
        private_key_password: The key's password, if it is encrypted (secret;
            ``INSPECTOR_SINKS__OPCUA__PRIVATE_KEY_PASSWORD``).
        trusted_clients_dir: Folder of the client certificates (``.der``/``.pem``) allowed to
            connect; any other client certificate is refused.
        security_modes: Offered endpoints: ``sign`` and ``sign_and_encrypt``
            (``Basic256Sha256``); ``none`` (no signature, no encryption) only if listed.
        allow_anonymous: Clients may connect without a user name.
        users: User name to password (secrets; set them from the environment,
            ``INSPECTOR_SINKS__OPCUA__USERS__PLC1=...``).
        min_publishing_interval_ms: Shortest publishing interval granted to a subscription: a
            camera's values are written between two publishes, so a subscriber always gets
            them together.
        ready_poll_s: How often the daemon object's ``Ready`` is refreshed.
        queue_per_camera: Results of one camera waiting to be served, one per publishing
            interval (a batch brings several at once, and a PLC needs each part's verdict);
            beyond it the oldest waiting one is dropped (counted): the server cannot keep up.
    """

    enabled: bool = False
    host: str = Field(default="0.0.0.0", min_length=1)
    port: int = Field(default=4840, ge=1, le=65535)
    namespace_uri: str = Field(default="urn:inspector:verdicts", min_length=1, max_length=256)
    application_uri: str | None = Field(default=None, min_length=1, max_length=256)
    certificate_file: Path | None = None
    private_key_file: Path | None = None
    private_key_password: SecretStr | None = None
    trusted_clients_dir: Path | None = None
    security_modes: tuple[OpcuaSecurityMode, ...] = Field(
        default=("sign", "sign_and_encrypt"), min_length=1
    )
    allow_anonymous: bool = False
    users: dict[str, SecretStr] = Field(default_factory=dict)
    min_publishing_interval_ms: int = Field(default=20, ge=1, le=60_000)
    ready_poll_s: float = Field(default=1.0, gt=0, le=60)
    queue_per_camera: int = Field(default=64, ge=1, le=10_000)

    @field_validator("users")
    @classmethod
    def _valid_users(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, password in users.items():
            if not (0 < len(name) <= 128 and name.isprintable() and not name.isspace()):
                raise ValueError("a user name is 1 to 128 printable characters")
            if not password.get_secret_value():
                raise ValueError("every user needs a password (an empty one is refused)")
        return users

    @model_validator(mode="after")
    def _secure_unless_told(self) -> OpcuaSinkConfig:
        if not self.enabled:
            return self
        secure = [m for m in self.security_modes if m != "none"]
        if secure:
            missing = [
                key
                for key in ("certificate_file", "private_key_file", "trusted_clients_dir")
                if getattr(self, key) is None
            ]
            if missing:
                raise ValueError(
                    f"security modes {', '.join(secure)} need {', '.join(missing)} (the daemon's "
                    "certificate and key, and the folder of trusted client certificates); or "
                    "list only none in security_modes (no signature, no encryption)"
                )
        elif self.users:
            raise ValueError(
                "users with only security mode none would send passwords in clear: add sign or "
                "sign_and_encrypt to security_modes"
            )
        if not self.users and not self.allow_anonymous:
            raise ValueError(
                "no client could log in: add users (INSPECTOR_SINKS__OPCUA__USERS__<NAME>) or "
                "set allow_anonymous: true"
            )
        return self


class SinksConfig(Frozen):
    """Where results go."""

    kafka: KafkaSinkConfig = KafkaSinkConfig()
    jsonl: JsonlSinkConfig = JsonlSinkConfig()
    overlays: OverlaySinkConfig = OverlaySinkConfig()
    mqtt: MqttSinkConfig = MqttSinkConfig()
    opcua: OpcuaSinkConfig = OpcuaSinkConfig()
