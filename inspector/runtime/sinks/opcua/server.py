"""The OPC UA server of the verdicts, on asyncua: its address space and how results are written.

Runs on the sink's own event loop (:mod:`inspector.runtime.sinks.opcua.sink`); nothing here
is thread-safe, and nothing here blocks for long (the address space is in memory).

Address space, in the namespace ``sinks.opcua.namespace_uri`` (index 2: the server's own
application URI is 1)::

    Objects/Inspector                     daemon object, node id  s=Inspector
      Ready, Version                                             s=Inspector/Ready ...
      Cameras/<camera>                    one object per camera  s=Cameras/<camera>
        IsAnomalous ... ResultCount                              s=Cameras/<camera>/IsAnomalous

A camera id follows the id rule (:mod:`inspector.runtime.ids`: no ``/``), so the string node
ids are unambiguous.

Values change together: a result's values are written in one run of the event loop, with no
point where the loop could run anything else (every write completes without suspending), and
subscriptions publish from their own task on that loop. So a publish sees all of a result's
values or none. This holds while subscriptions publish on a timer: a publishing interval of
0 would make asyncua publish from inside each write, value by value, so the interval a client
asks for is raised to ``sinks.opcua.min_publishing_interval_ms`` (OPC UA lets a server revise
it). All values of a result carry the same source timestamp (the moment it was served,
strictly increasing per camera), and ``ResultCount`` is written last.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua
from asyncua.server.server import Server
from cryptography import x509

from inspector.errors import ConfigError
from inspector.runtime.config import OpcuaSinkConfig
from inspector.runtime.sinks.opcua.security import (
    Users,
    application_uri,
    client_validator,
    load_certificate,
    load_private_key,
    trusted_certificates,
)
from inspector.runtime.sinks.opcua.values import NULL_TIME, Verdict

log = logging.getLogger(__name__)

#: A camera object's variables, in the order they are written: ``ResultCount`` last.
CAMERA_VARIABLES: tuple[tuple[str, ua.VariantType], ...] = (
    ("IsAnomalous", ua.VariantType.Boolean),
    ("Score", ua.VariantType.Double),
    ("FrameId", ua.VariantType.String),
    ("PartId", ua.VariantType.String),
    ("CapturedAt", ua.VariantType.DateTime),
    ("ProcessedAt", ua.VariantType.DateTime),
    ("Late", ua.VariantType.Boolean),
    ("Model", ua.VariantType.String),
    ("DefectCount", ua.VariantType.UInt32),
    ("ResultCount", ua.VariantType.UInt64),
)
#: OPC UA's endpoints by configured mode.
_POLICIES = {
    "sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "sign_and_encrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "none": ua.SecurityPolicyType.NoSecurity,
}


def _nodeid(name: str, index: int) -> ua.NodeId:
    """A string node id in the inspector's namespace."""
    return ua.NodeId(ua.String(name), ua.Int16(index))


def _ua_time(moment: datetime) -> ua.DateTime:
    """``moment`` as asyncua's ``DateTime`` (a ``datetime``, typed apart)."""
    return ua.DateTime.fromtimestamp(moment.timestamp(), UTC)


@dataclass
class _Camera:
    """A camera object's variable node ids, in :data:`CAMERA_VARIABLES` order."""

    nodeids: list[ua.NodeId]
    stamp: datetime = NULL_TIME


class VerdictServer:
    """The asyncua server with the inspector's address space (see the module).

    Args:
        config: ``sinks.opcua`` (enabled, checked by the config model).
        version: The package version (``Version``).

    Raises:
        ConfigError: A certificate, key or folder cannot be read (named by its key).
    """

    def __init__(self, config: OpcuaSinkConfig, version: str) -> None:
        self.config = config
        self.version = version
        secure = any(mode != "none" for mode in config.security_modes)
        self._certificate: x509.Certificate | None = None
        self._key: Any = None
        self._validator: Any = None
        self.application_uri = config.application_uri or "urn:inspector:daemon"
        if secure:
            # Checked by the config model: set whenever a secure mode is.
            assert config.certificate_file is not None and config.private_key_file is not None
            assert config.trusted_clients_dir is not None
            self._certificate = load_certificate(config.certificate_file, "certificate_file")
            password = config.private_key_password
            self._key = load_private_key(
                config.private_key_file, password.get_secret_value() if password else None
            )
            self.application_uri = application_uri(
                self._certificate, config.application_uri, config.certificate_file
            )
            trusted_certificates(config.trusted_clients_dir, strict=True)
            self._validator = client_validator(config.trusted_clients_dir)
        users = {name: secret.get_secret_value().encode() for name, secret in config.users.items()}
        self._server = Server(user_manager=Users(users, config.allow_anonymous))
        self._cameras: dict[str, _Camera] = {}
        self._index = 0
        self._cameras_folder: Any = None
        self._ready: ua.NodeId | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint URL clients connect to."""
        return f"opc.tcp://{self.config.host}:{self.config.port}/"

    async def start(self, cameras: list[str]) -> None:
        """Build the address space (``cameras`` first) and listen.

        Raises:
            ConfigError: The port cannot be listened on.
        """
        server, config = self._server, self.config
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("inspector")
        server.product_uri = "urn:inspector"
        server.application_type = ua.ApplicationType.Server
        await server.set_application_uri(self.application_uri)
        server.set_security_policy([_POLICIES[mode] for mode in config.security_modes])
        tokens: list[type] = [ua.UserNameIdentityToken] if config.users else []
        if config.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if self._certificate is not None:
            server.iserver.certificate = self._certificate
            server.iserver.private_key = self._key
            server.set_certificate_validator(self._validator)
        _clamp_publishing_interval(server, config.min_publishing_interval_ms)
        self._index = await server.register_namespace(config.namespace_uri)
        await self._build(cameras)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"sinks.opcua.port: cannot listen on {config.host}:{config.port}: "
                f"{exc.strerror or exc} (another server on the port? pick a free one)"
            ) from exc
        log.info(
            "OPC UA server on %s (namespace %s, security %s)",
            self.endpoint,
            config.namespace_uri,
            ", ".join(config.security_modes),
        )

    async def stop(self) -> None:
        """Close every session and stop listening."""
        await self._server.stop()

    async def _build(self, cameras: list[str]) -> None:
        idx = self._index
        objects = self._server.nodes.objects
        daemon = await objects.add_object(
            _nodeid("Inspector", idx), ua.QualifiedName("Inspector", idx)
        )
        ready = await daemon.add_variable(
            _nodeid("Inspector/Ready", idx),
            ua.QualifiedName("Ready", idx),
            False,
            varianttype=ua.VariantType.Boolean,
        )
        self._ready = ready.nodeid
        await daemon.add_variable(
            _nodeid("Inspector/Version", idx),
            ua.QualifiedName("Version", idx),
            self.version,
            varianttype=ua.VariantType.String,
        )
        self._cameras_folder = await daemon.add_folder(
            _nodeid("Cameras", idx), ua.QualifiedName("Cameras", idx)
        )
        for camera in cameras:
            await self.camera(camera)

    async def camera(self, label: str) -> _Camera:
        """The camera object of ``label`` (a bounded metric label), created on first use."""
        known = self._cameras.get(label)
        if known is not None:
            return known
        idx = self._index
        node = await self._cameras_folder.add_object(
            _nodeid(f"Cameras/{label}", idx), ua.QualifiedName(label, idx)
        )
        initial: dict[str, object] = {
            "CapturedAt": NULL_TIME,
            "ProcessedAt": NULL_TIME,
            "Score": 0.0,
            "IsAnomalous": False,
            "Late": False,
            "DefectCount": 0,
            "ResultCount": 0,
        }
        nodeids = []
        for name, kind in CAMERA_VARIABLES:
            variable = await node.add_variable(
                _nodeid(f"Cameras/{label}/{name}", idx),
                ua.QualifiedName(name, idx),
                initial.get(name),  # strings: null until the first result
                varianttype=kind,
            )
            nodeids.append(variable.nodeid)
        camera = self._cameras[label] = _Camera(nodeids)
        return camera

    async def write(self, label: str, verdict: Verdict, served_at: datetime) -> None:
        """Write one result's values to the camera's object, together (see the module)."""
        camera = await self.camera(label)
        # One timestamp for the whole set, strictly increasing per camera: a subscriber that
        # asks for every write (trigger StatusValueTimestamp) tells results apart by it.
        stamp = max(served_at, camera.stamp + timedelta(microseconds=1))
        camera.stamp = stamp
        values = (
            verdict.is_anomalous,
            verdict.score,
            verdict.frame_id,
            verdict.part_id,
            verdict.captured_at,
            verdict.processed_at,
            verdict.late,
            verdict.model,
            verdict.defect_count,
            verdict.result_count,
        )
        at = _ua_time(stamp)
        for nodeid, (_, kind), value in zip(camera.nodeids, CAMERA_VARIABLES, values, strict=True):
            data = ua.DataValue(ua.Variant(value, kind), SourceTimestamp=at, ServerTimestamp=at)
            await self._server.write_attribute_value(nodeid, data)

    async def set_ready(self, ready: bool) -> None:
        """Write the daemon object's ``Ready``."""
        if self._ready is not None:
            now = datetime.now(UTC)
            data = ua.DataValue(
                ua.Variant(ready, ua.VariantType.Boolean),
                SourceTimestamp=_ua_time(now),
                ServerTimestamp=_ua_time(now),
            )
            await self._server.write_attribute_value(self._ready, data)


def _clamp_publishing_interval(server: Server, min_ms: int) -> None:
    """Revise every new subscription's publishing interval up to ``min_ms`` (see the module).

    asyncua offers no setting for it: its subscription service is wrapped on this server
    instance (a private use of asyncua, checked by the OPC UA tests: a client asking for 0 ms
    gets ``min_ms``, and its notifications stay whole).
    """
    service = server.iserver.subscription_service
    create: Callable[..., Awaitable[ua.CreateSubscriptionResult]] = service.create_subscription

    async def clamped(
        params: ua.CreateSubscriptionParameters, *args: Any, **kwargs: Any
    ) -> ua.CreateSubscriptionResult:
        params.RequestedPublishingInterval = max(float(params.RequestedPublishingInterval), min_ms)
        return await create(params, *args, **kwargs)

    service.create_subscription = clamped  # type: ignore[method-assign]


__all__ = ["CAMERA_VARIABLES", "VerdictServer"]
