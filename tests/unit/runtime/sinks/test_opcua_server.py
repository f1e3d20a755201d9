"""The OPC UA sink end to end: a real asyncua client over Basic256Sha256, a real pipeline.

A PLC-like client subscribes to a camera object over SignAndEncrypt with a user and password
while a pipeline (in-process source, a tiny model) runs; it must see every result in order,
and every notification it gets must leave it with one result's values, never a mix. Wrong
passwords, untrusted certificates and anonymous clients are refused and logged without the
secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import torch
from asyncua import Client, Node, ua
from asyncua.common.subscription import Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from fakes import FakeSink, FakeSource, make_frame, make_inspection, small_models
from opcua_pki import Identity, Pki, make_pki
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from waiting import wait_until

from inspector.errors import ConfigError
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import BatcherConfig, OpcuaSinkConfig
from inspector.runtime.metrics import CameraLabels, Metrics
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.records import Inspection
from inspector.runtime.sinks.opcua import OpcuaSink
from inspector.runtime.sinks.opcua.server import CAMERA_VARIABLES
from inspector.tools.benchmark.plant_opcua import subscription_parameters

pytestmark = pytest.mark.component

NAMESPACE = "urn:inspector:test-verdicts"
PASSWORD = "plc-pass-4711"
MIN_PUBLISHING_MS = 20
FRAMES = 24
NAMES = [name for name, _ in CAMERA_VARIABLES]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Running:
    """The sink under test, serving on a loopback port, and what it was built with."""

    sink: OpcuaSink
    metrics: Metrics
    registry: CollectorRegistry
    pki: Pki
    url: str
    ready: dict[str, bool] = field(default_factory=lambda: {"ready": True})


def _start(pki: Pki) -> Running:
    """A sink serving on a free loopback port, set up (the caller closes it)."""
    port = _free_port()
    config = OpcuaSinkConfig(
        enabled=True,
        host="127.0.0.1",
        port=port,
        namespace_uri=NAMESPACE,
        certificate_file=pki.server.certificate,
        private_key_file=pki.server.key,
        trusted_clients_dir=pki.trusted_dir,
        users={"plc": SecretStr(PASSWORD)},
        min_publishing_interval_ms=MIN_PUBLISHING_MS,
        ready_poll_s=0.05,
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry, cameras=CameraLabels({"cam"}))
    ready = {"ready": True}
    sink = OpcuaSink(config, metrics, ready=lambda: ready["ready"], deadline_ms=lambda _: 60_000)
    sink.setup()
    return Running(sink, metrics, registry, pki, f"opc.tcp://127.0.0.1:{port}/", ready)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def running(pki: Pki) -> Iterator[Running]:
    run = _start(pki)
    try:
        yield run
    finally:
        run.sink.close()


async def _client(
    run: Running, *, who: Identity | None = None, user: str | None = "plc", password: str = PASSWORD
) -> Client:
    who = who or run.pki.plc
    client = Client(run.url, timeout=10)
    client.application_uri = who.uri
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(who.certificate),
        str(who.key),
        server_certificate=str(run.pki.server.certificate),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    return client


async def _camera_nodes(client: Client, camera: str) -> list[Node]:
    index = await client.get_namespace_index(NAMESPACE)
    return [client.get_node(f"ns={index};s=Cameras/{camera}/{name}") for name in NAMES]


class _Quiet:
    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        del node, val, data


class _Recorder(Subscription):
    """A client subscription that keeps each notification message as one batch."""

    def __init__(self, client: Client, interval_ms: float) -> None:
        super().__init__(client.uaclient.session, subscription_parameters(interval_ms), _Quiet())
        self.names: dict[int, str] = {}
        #: Per notification message: (variable, value, source timestamp), in message order.
        self.batches: list[list[tuple[str, Any, datetime]]] = []

    async def watch(self, nodes: list[Node], *, every_write: bool, queue: int) -> None:
        trigger = (
            ua.DataChangeTrigger.StatusValueTimestamp
            if every_write
            else ua.DataChangeTrigger.StatusValue
        )
        requests = []
        for name, node in zip(NAMES, nodes, strict=True):
            request = self._make_monitored_item_request(
                node,
                ua.AttributeIds.Value,
                ua.DataChangeFilter(Trigger=trigger),
                queue,
                ua.MonitoringMode.Reporting,
                0.0,
            )
            self.names[request.RequestedParameters.ClientHandle] = name
            requests.append(request)
        for created in await self.create_monitored_items(requests):
            assert not isinstance(created, ua.StatusCode), created

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        batch = []
        for notification in publish_result.NotificationMessage.NotificationData or []:
            if isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    value = item.Value
                    batch.append(
                        (self.names[item.ClientHandle], value.Value.Value, value.SourceTimestamp)
                    )
        if batch:
            self.batches.append(batch)
        await super().publish_callback(publish_result)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _expected(inspection: Inspection, count: int) -> dict[str, Any]:
    message = inspection.message
    assert message.captured_at is not None
    return {
        "IsAnomalous": message.is_anomalous,
        "Score": message.score,
        "FrameId": message.frame_id,
        "PartId": message.part_id,
        "CapturedAt": datetime.fromisoformat(message.captured_at),
        "ProcessedAt": datetime.fromisoformat(message.processed_at),
        "Late": False,
        "Model": message.model.name,
        "DefectCount": len(message.defects),
        "ResultCount": count,
    }


def _same(name: str, seen: Any, expected: Any) -> bool:
    if isinstance(expected, datetime):
        return abs((_utc(seen) - expected).total_seconds()) < 1e-3
    if isinstance(expected, float):
        return abs(seen - expected) < 1e-9
    return bool(seen == expected)


@dataclass
class _Watch:
    """What the PLC-like client saw, filled by its thread."""

    connected: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    revised_ms: list[float] = field(default_factory=list)
    snapshots: _Recorder | None = None
    every: _Recorder | None = None
    error: BaseException | None = None


async def _watch(run: Running, watch: _Watch) -> None:
    client = await _client(run)
    async with client:
        nodes = await _camera_nodes(client, "cam")
        # As a PLC reads: each variable's latest value per publish (queue 1), and a client that
        # asks for every write (timestamp trigger, deep queue); both ask for 0 ms publishing.
        for every_write in (False, True):
            recorder = _Recorder(client, 0)
            result = await recorder.init()
            watch.revised_ms.append(result.RevisedPublishingInterval)
            await recorder.watch(nodes, every_write=every_write, queue=10_000 if every_write else 1)
            if every_write:
                watch.every = recorder
            else:
                watch.snapshots = recorder
        watch.connected.set()
        while not watch.stop.is_set():
            await asyncio.sleep(0.02)


def _results_of(recorder: _Recorder) -> list[dict[str, Any]]:
    """Every write the recorder saw, one dict per served result, in the order served."""
    by_stamp: dict[datetime, dict[str, Any]] = {}
    for batch in recorder.batches:
        for name, value, stamp in batch:
            by_stamp.setdefault(stamp, {})[name] = value
    return [by_stamp[s] for s in sorted(by_stamp) if by_stamp[s].get("ResultCount")]


@pytest.fixture(scope="module")
def model() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()


def test_a_plc_sees_every_result_in_order_and_each_notification_whole(
    pki: Pki, model: ReverseDistillation
) -> None:
    # A server of its own: the pipeline closes its sinks when it is done.
    running = _start(pki)
    watch = _Watch()

    def client_thread() -> None:
        try:
            asyncio.run(_watch(running, watch))
        except BaseException as exc:  # reported by the test below
            watch.error = exc
            watch.connected.set()

    thread = threading.Thread(target=client_thread, daemon=True)
    thread.start()
    assert watch.connected.wait(30) and watch.error is None, watch.error
    assert watch.revised_ms == [MIN_PUBLISHING_MS, MIN_PUBLISHING_MS]  # 0 ms asked: revised

    rng = np.random.default_rng(1)
    frames = []
    for i in range(FRAMES):
        frame = make_frame(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), f"cam-{i}", "cam")
        meta = dataclasses.replace(
            frame.meta,
            captured_at=datetime.now(UTC).isoformat(),
            part_id=None if i % 5 == 4 else f"SN/{i:04d}",
        )
        frames.append(dataclasses.replace(frame, meta=meta))
    recorded = FakeSink()
    # Batches of 4: a camera's results leave the worker together, and still each is served
    # (one write per publishing interval), so the deep-queue client below sees every one.
    pipeline = Pipeline(
        [FakeSource(frames, per_poll=4)],
        BatcherConfig(max_batch_size=4, max_wait_ms=50, queue_size=4),
        small_models(model, running.metrics, max_batch_size=4),
        [running.sink, recorded],
        running.metrics,
    )
    pipeline.start()
    try:
        wait_until(lambda: pipeline.finished, 60, "the pipeline to finish")
    finally:
        pipeline.close()
    assert running.sink.flush(5)
    assert watch.every is not None and watch.snapshots is not None
    every, snapshots = watch.every, watch.snapshots
    wait_until(lambda: len(_results_of(every)) >= FRAMES, 10, "the client to see every result")
    watch.stop.set()
    thread.join(10)

    results = recorded.results
    assert [r.message.frame_id for r in results] == [f"cam-{i}" for i in range(FRAMES)]
    dropped = running.registry.get_sample_value(
        "inspector_opcua_updates_dropped_total", {"camera": "cam"}
    )
    assert not dropped, "a result was replaced before it was served"
    expected = {r.message.frame_id: _expected(r, n) for n, r in enumerate(results, start=1)}

    # Every result, in order, each write a whole set of ten values of one frame.
    seen = _results_of(every)
    assert [s["FrameId"] for s in seen] == [f"cam-{i}" for i in range(FRAMES)]
    for values in seen:
        want = expected[values["FrameId"]]
        assert sorted(values) == sorted(NAMES)
        assert all(_same(n, values[n], want[n]) for n in NAMES), (values, want)

    # A PLC's view after each notification message is one result's values, never a mix.
    state: dict[str, Any] = {}
    views = 0
    for batch in snapshots.batches:
        state.update({name: value for name, value, _ in batch})
        if not state.get("ResultCount"):
            continue  # the initial values, before the first result
        views += 1
        want = expected[state["FrameId"]]
        assert all(_same(n, state[n], want[n]) for n in NAMES), (state, want)
    assert views >= 1
    assert any(
        {"FrameId", "Score", "ResultCount"} <= {n for n, _, _ in b} for b in snapshots.batches
    )
    assert state["FrameId"] == f"cam-{FRAMES - 1}" and state["ResultCount"] == FRAMES
    assert running.sink.unready_reason() == (
        "sink opcua: the OPC UA server is not running (closed)"
    )
    plant = {"sink": "opcua"}
    assert (
        running.registry.get_sample_value("inspector_plant_latency_seconds_count", plant) == FRAMES
    )


def test_a_burst_is_served_latest_first_and_every_result_confirmed_once(running: Running) -> None:
    # Results faster than the server writes: each is confirmed exactly once, as served or as
    # replaced (counted), and the camera shows the last one.
    calls: list[str] = []
    lock = threading.Lock()

    def done_for(frame_id: str) -> Any:
        def done(exc: BaseException | None) -> None:
            assert exc is None
            with lock:
                calls.append(frame_id)

        return done

    for i in range(200):
        running.sink.publish(make_inspection(f"b-{i}", "burst"), done_for(f"b-{i}"))
    assert running.sink.flush(5)
    assert sorted(calls) == sorted(f"b-{i}" for i in range(200))

    async def read() -> tuple[str, int]:
        client = await _client(running)
        async with client:
            nodes = await _camera_nodes(client, "burst")
            frame, count = (
                await nodes[NAMES.index("FrameId")].read_value(),
                await nodes[NAMES.index("ResultCount")].read_value(),
            )
            return str(frame), int(count)

    frame, count = asyncio.run(read())
    dropped = running.registry.get_sample_value(
        "inspector_opcua_updates_dropped_total", {"camera": "burst"}
    )
    assert frame == "b-199" and count + (dropped or 0) == 200 and 1 <= count <= 200


def test_the_daemon_object_mirrors_readiness_and_the_version(running: Running) -> None:
    async def read(expect: bool) -> str:
        client = await _client(running)
        async with client:
            index = await client.get_namespace_index(NAMESPACE)
            ready = client.get_node(f"ns={index};s=Inspector/Ready")
            for _ in range(100):
                if await ready.read_value() is expect:
                    break
                await asyncio.sleep(0.05)
            assert await ready.read_value() is expect
            path = ["0:Objects", f"{index}:Inspector", f"{index}:Version"]
            version = await client.nodes.root.get_child(path)
            return str(await version.read_value())

    running.ready["ready"] = False
    asyncio.run(read(False))
    running.ready["ready"] = True
    assert asyncio.run(read(True))


def test_only_basic256sha256_endpoints_are_offered(running: Running) -> None:
    async def endpoints() -> list[ua.EndpointDescription]:
        client = Client(running.url, timeout=10)
        return list(await client.connect_and_get_server_endpoints())

    offered = asyncio.run(endpoints())
    assert {(e.SecurityPolicyUri.rsplit("#")[-1], e.SecurityMode) for e in offered} == {
        ("Basic256Sha256", ua.MessageSecurityMode.Sign),
        ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt),
    }
    tokens = {t.TokenType for e in offered for t in e.UserIdentityTokens}
    assert tokens == {ua.UserTokenType.UserName}  # no anonymous unless the config says so


def _refused(run: Running, **kwargs: Any) -> BaseException:
    async def connect() -> None:
        client = await _client(run, **kwargs)
        await client.connect()
        await client.disconnect()

    with pytest.raises(Exception) as refused:
        asyncio.run(connect())
    return refused.value


def test_a_wrong_password_is_refused_and_logged_without_it(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-pass-0815"
    with caplog.at_level(logging.DEBUG):
        error = _refused(running, password=wrong)
    assert "BadUserAccessDenied" in str(error) or "UserAccessDenied" in repr(error)
    assert "login refused for user 'plc'" in caplog.text
    # The daemon's side, at every level (asyncua's client logs its own requests at DEBUG,
    # password and all: that is the PLC's side of the wire, not the daemon's logs).
    served = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("asyncua.client")
    )
    assert wrong not in served and PASSWORD not in served


def test_an_unknown_user_and_anonymous_clients_are_refused(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _refused(running, user="intruder\nforged line")
        _refused(running, user=None)
    assert "login refused for user 'intruder\\nforged line'" in caplog.text
    assert "\nforged line" not in caplog.text


def test_an_untrusted_client_certificate_is_refused(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        error = _refused(running, who=running.pki.stranger)
    assert "BadCertificateUntrusted" in str(error) or "Untrusted" in repr(error)
    assert "not in sinks.opcua.trusted_clients_dir" in caplog.text
    assert PASSWORD not in caplog.text


def test_a_port_in_use_is_named_by_its_key(running: Running) -> None:
    port = int(running.url.rsplit(":", 1)[1].strip("/"))
    config = running.sink.config.model_copy(update={"port": port})
    second = OpcuaSink(config, Metrics(CollectorRegistry()))
    with pytest.raises(
        ConfigError, match=rf"sinks\.opcua\.port: cannot listen on 127\.0\.0\.1:{port}"
    ):
        second.setup()
    assert not second.ready()
