"""A PLC-like OPC UA client for ``bench/plant_latency.py``: when each verdict's data change came.

asyncua over ``Basic256Sha256`` SignAndEncrypt with a user, as a PLC would connect to the
daemon in production (:mod:`inspector.runtime.sinks.opcua`). It subscribes to every camera's
``FrameId`` with a deep queue, so each value the server serves reaches it (a PLC typically reads
with a queue of 1; the deep queue only lets the benchmark count every served value). The
arrival time is taken when the publish response is handed to the subscription, before any
handler runs: epoch seconds, the clock of the results' ``captured_at``.

The client runs its own event loop on a thread of its own (:class:`OpcuaWatcher`); the
benchmark starts it once the daemon's server listens and stops it after the run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from inspector.tools.benchmark.opcua_pki import Identity

#: A publish queue per monitored item deep enough for a whole run between two publishes.
QUEUE = 10_000


@dataclass(frozen=True)
class OpcuaEndpoint:
    """Where and as whom the client connects.

    Attributes:
        url: ``opc.tcp://host:port/``.
        namespace_uri: ``sinks.opcua.namespace_uri``.
        server_certificate: The daemon's certificate (DER), which the client pins.
        client: The client's identity (its certificate is in the daemon's trusted folder).
        user: User name; ``password`` its password.
        publishing_interval_ms: Asked for; the server revises it up to its minimum.
    """

    url: str
    namespace_uri: str
    server_certificate: str
    client: Identity
    user: str
    password: str
    publishing_interval_ms: float = 0.0


def subscription_parameters(interval_ms: float) -> Any:
    """A PLC-like subscription's parameters: ``interval_ms`` publishing, no per-publish cap."""
    return ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=interval_ms,
        RequestedLifetimeCount=10000,
        RequestedMaxKeepAliveCount=100,
        MaxNotificationsPerPublish=0,
        PublishingEnabled=True,
        Priority=0,
    )


class _Arrivals(Subscription):
    """A subscription that notes when each served ``FrameId`` came."""

    def __init__(self, client: Client, interval_ms: float, seen: dict[str, float]) -> None:
        super().__init__(client.uaclient.session, subscription_parameters(interval_ms), None)
        self.seen = seen
        self.notifications = 0

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        arrived = time.time()  # before anything else: the moment the change reached the client
        for data in publish_result.NotificationMessage.NotificationData or []:
            if isinstance(data, ua.DataChangeNotification):
                for item in data.MonitoredItems:
                    frame_id = item.Value.Value.Value
                    if isinstance(frame_id, str) and frame_id:  # not the initial empty value
                        self.notifications += 1
                        self.seen.setdefault(frame_id, arrived)
        await super().publish_callback(publish_result)


class OpcuaWatcher:
    """The client on its own thread: :meth:`start` connects and subscribes, :meth:`stop` ends.

    Attributes:
        seen: Frame id to the arrival time (epoch seconds) of its ``FrameId`` data change.
        revised_interval_ms: The publishing interval the server granted.
        notifications: ``FrameId`` changes received (a repeat would count twice).
    """

    def __init__(self, endpoint: OpcuaEndpoint, cameras: list[str]) -> None:
        self.endpoint = endpoint
        self.cameras = cameras
        self.seen: dict[str, float] = {}
        self.revised_interval_ms: float | None = None
        self.notifications = 0
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-opcua-client", daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        """Connect (retrying until the server listens) and subscribe.

        Raises:
            TimeoutError: Not subscribed within ``timeout`` seconds.
            Exception: What the client failed with.
        """
        self._deadline = time.monotonic() + timeout
        self._thread.start()
        if not self._subscribed.wait(timeout + 5):
            raise TimeoutError(f"the OPC UA client was not subscribed within {timeout:g} s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Unsubscribe and disconnect (again: nothing); raises what the client failed with."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        try:
            asyncio.run(self._watch())
        except BaseException as exc:  # raised to the caller by start or stop
            self._error = exc
        finally:
            self._subscribed.set()

    async def _client(self) -> Client:
        e = self.endpoint
        client = Client(e.url, timeout=10)
        client.application_uri = e.client.uri
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(e.client.certificate),
            str(e.client.key),
            server_certificate=e.server_certificate,
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        client.set_user(e.user)
        client.set_password(e.password)
        return client

    async def _connected(self) -> Client:
        """A connected client; the daemon's server may still be starting."""
        while True:
            client = await self._client()
            try:
                await client.connect()
            except (OSError, TimeoutError, UaError):
                if time.monotonic() > self._deadline:
                    raise
                await asyncio.sleep(0.2)
            else:
                return client

    async def _watch(self) -> None:
        client = await self._connected()
        try:
            index = await client.get_namespace_index(self.endpoint.namespace_uri)
            nodes = [client.get_node(f"ns={index};s=Cameras/{c}/FrameId") for c in self.cameras]
            arrivals = _Arrivals(client, self.endpoint.publishing_interval_ms, self.seen)
            created = await arrivals.init()
            self.revised_interval_ms = float(created.RevisedPublishingInterval)
            requests = [
                arrivals._make_monitored_item_request(
                    node,
                    AttributeIds.Value,
                    # Every served value (its source timestamp changes), not only new ones.
                    ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp),
                    QUEUE,
                    ua.MonitoringMode.Reporting,
                    ua.Double(0.0),
                )
                for node in nodes
            ]
            for made in await arrivals.create_monitored_items(requests):
                if isinstance(made, ua.StatusCode):
                    made.check()
            self._subscribed.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.02)
            self.notifications = arrivals.notifications
        finally:
            await client.disconnect()


__all__ = ["OpcuaEndpoint", "OpcuaWatcher", "subscription_parameters"]
