from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fakes import FakeSink
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint, save_checkpoint
from inspector.cli import main
from inspector.errors import BrokerUnavailableError, CheckpointError, ConfigError
from inspector.runtime import daemon as daemon_module
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon

# Runs the daemon with its HTTP server on the trained model: the component tier, not make unit.
pytestmark = pytest.mark.component


def _config(ckpt: Path, frames: Path, out: Path, *, loop: bool = False) -> InspectorConfig:
    return InspectorConfig.model_validate(
        {
            "sources": [
                {"type": "directory", "path": str(frames), "camera_id": "replay", "loop": loop}
            ],
            "model": {"checkpoint": str(ckpt), "device": "cpu", "warmup_batches": 1},
            "batcher": {"max_batch_size": 4, "max_wait_ms": 5},
            "sinks": {
                "kafka": {"enabled": False},
                "jsonl": {"path": str(out / "results.jsonl")},
                "overlays": {"directory": str(out / "overlays")},
            },
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )


@pytest.fixture()
def frames(data_root: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for cls in ("good", "crack", "missing"):
        for src in sorted((data_root / "test" / cls).iterdir())[:3]:
            shutil.copy(src, folder / f"{cls}_{src.name}")
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def test_replay_runs_to_completion_with_results_dead_letters_and_metrics(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    daemon = Daemon(_config(checkpoint.path, frames, tmp_path), registry=registry)
    assert daemon.run() == 0  # finite source: drains and exits by itself
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["frame_id"] for r in results) == sorted(
        p.name for p in frames.iterdir() if p.name != "zz_broken.png"
    )
    dead = (tmp_path / "results.dlq.jsonl").read_text().splitlines()
    assert len(dead) == 1 and "zz_broken.png" in dead[0]
    assert all(r["model"]["checkpoint_sha256"] == checkpoint.sha256 for r in results)
    flagged = [r for r in results if r["is_anomalous"]]
    assert len(list((tmp_path / "overlays").rglob("*.png"))) == len(flagged)
    assert registry.get_sample_value("inspector_frames_processed_total", {"camera": "replay"}) == 9
    assert registry.get_sample_value("inspector_anomalies_total", {"camera": "replay"}) == len(
        flagged
    )
    assert registry.get_sample_value("inspector_model_reloads_total", {"result": "success"}) == 1
    info = {
        "name": checkpoint.meta.name,
        "backbone": "resnet18",
        "device": "cpu",
        "checkpoint_sha256": checkpoint.sha256,
        "backend": "torch",
    }
    # precision auto: whichever of fp32 and bf16 measured faster here, exactly one of them.
    served = [
        p
        for p in ("fp32", "bf16")
        if registry.get_sample_value("inspector_model_info", {**info, "precision": p}) == 1
    ]
    assert len(served) == 1
    assert registry.get_sample_value("inspector_threshold", {"kind": "image"}) == 0.5


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ready_after_warm_up_and_drains_on_request(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    daemon = Daemon(_config(checkpoint.path, frames, tmp_path, loop=True), registry=registry)
    codes: list[int] = []
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(daemon.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if daemon.server is not None and daemon.server.port:
                status, _ = _get(f"http://127.0.0.1:{daemon.server.port}/readyz")
                codes.append(status)
                if status == 200:
                    break
            time.sleep(0.05)
        assert codes[0] == 503  # served from the start, not ready while loading and warming
        assert codes[-1] == 200
        port = daemon.server.port  # type: ignore[union-attr]
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"inspector_frames_received_total" in body
    finally:
        daemon.request_exit()
        thread.join(60)
    assert exit_code == [0]
    assert registry.get_sample_value("inspector_ready") == 0


def test_keep_open_false_ends_a_finite_replay_even_with_the_control_api_on(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Unset, the control API would keep the daemon running after its folder ran dry.
    values = _config(checkpoint.path, frames, tmp_path).model_dump(mode="json")
    values["http"]["admin_token"] = "a-token-of-the-line-0123"
    values["daemon"] = {"keep_open": False}
    daemon = Daemon(InspectorConfig.model_validate(values), registry=CollectorRegistry())
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(daemon.run()))
    with caplog.at_level(logging.INFO, logger="inspector.runtime.daemon"):
        thread.start()
        thread.join(120)
    if thread.is_alive():  # kept open after all: stop it, then fail
        daemon.request_exit()
        thread.join(60)
    assert exit_code == [0] and daemon.control is not None  # it ran, API on, and ended
    assert "finishes once every source has run dry (daemon.keep_open)" in caplog.text


def test_missing_checkpoint_fails_at_start(frames: Path, tmp_path: Path) -> None:
    daemon = Daemon(
        _config(tmp_path / "none.safetensors", frames, tmp_path), registry=CollectorRegistry()
    )
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        daemon.run()


def test_wrong_config_key_exits_2_with_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  bootstrap_server: x:1\nbatcher:\n  max_batch_size: 0\n")
    assert main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "kafka.bootstrap_server" in err and "batcher.max_batch_size" in err


def test_env_overrides_named_in_the_contract(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from inspector.runtime.config import load_config

    monkeypatch.setenv("INSPECTOR_KAFKA__BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("INSPECTOR_MODEL__CHECKPOINT", "/models/line.safetensors")
    monkeypatch.setenv("INSPECTOR_HTTP__PORT", "9200")
    config = load_config(Path(__file__).parents[3] / "configs" / "kafka.yaml")
    assert config.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert str(config.model.checkpoint) == "/models/line.safetensors"
    assert config.http.port == 9200
    assert config.kafka.frames_topic == "inspector.frames"
    assert config.kafka.results_topic == "inspector.results"
    assert config.kafka.dlq_topic == "inspector.frames.dlq"


def test_camera_video_file_runs_through_the_daemon(
    checkpoint: LoadedCheckpoint, data_root: Path, tmp_path: Path
) -> None:
    import cv2

    video = tmp_path / "line.avi"
    images = [cv2.imread(str(p)) for p in sorted((data_root / "test" / "crack").iterdir())]
    images += [cv2.imread(str(p)) for p in sorted((data_root / "test" / "good").iterdir())[:4]]
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for image in images:
        writer.write(image)
    writer.release()
    config = InspectorConfig.model_validate(
        {
            "sources": [
                {"type": "camera", "camera_id": "station-1", "uri": str(video), "live": False}
            ],
            "model": {"checkpoint": str(checkpoint.path), "device": "cpu", "warmup_batches": 0},
            "sinks": {"kafka": {"enabled": False}, "jsonl": {"path": str(tmp_path / "r.jsonl")}},
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )
    registry = CollectorRegistry()
    assert Daemon(config, registry=registry).run() == 0
    results = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(results) == len(images)
    assert {r["camera_id"] for r in results} == {"station-1"}
    assert all(r["source"] is None and r["image_size"] == [h, w] for r in results)
    assert registry.get_sample_value(
        "inspector_frames_received_total", {"source": "camera"}
    ) == len(images)


def test_model_reload_keeps_serving_through_a_bad_file_and_switches_on_a_good_one(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path
) -> None:
    live = tmp_path / "live.safetensors"
    shutil.copy(checkpoint.path, live)
    registry = CollectorRegistry()
    out = tmp_path / "out"
    daemon = Daemon(_config(live, frames, out, loop=True), registry=registry)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    results_file = out / "results.jsonl"

    def results() -> list[dict[str, object]]:
        if not results_file.exists():
            return []
        return [json.loads(x) for x in results_file.read_text().splitlines() if x.strip()]

    def reloads(result: str) -> float | None:
        return registry.get_sample_value("inspector_model_reloads_total", {"result": result})

    try:
        wait_until(lambda: len(results()) >= 4, 120, "4 results")
        live.write_bytes(b"not a checkpoint")  # a botched deployment
        assert not daemon.reload_model()
        assert reloads("failure") == 1 and reloads("success") == 1
        served = len(results())
        wait_until(lambda: len(results()) >= served + 4, 120, "4 more results")  # old model
        assert not daemon.readiness()

        renamed = checkpoint.meta.model_copy(update={"name": "v2"})
        sha = save_checkpoint(live, checkpoint.model, renamed)
        daemon.request_reload()  # what SIGHUP does: reloaded by the main loop, in the background
        wait_until(lambda: reloads("success") == 2, 120, "the second successful reload")
        wait_until(
            lambda: any(r["model"]["name"] == "v2" for r in results()),  # type: ignore[index]
            120,
            "a result of model v2",
        )
        latest = results()[-1]["model"]
        assert latest == {"name": "v2", "backbone": "resnet18", "checkpoint_sha256": sha}
        info = {
            "name": "v2",
            "backbone": "resnet18",
            "device": "cpu",
            "checkpoint_sha256": sha,
            "backend": "torch",
        }
        assert any(
            registry.get_sample_value("inspector_model_info", {**info, "precision": p}) == 1
            for p in ("fp32", "bf16")
        )
    finally:
        daemon.request_exit()
        thread.join(timeout=60)
    assert not thread.is_alive()


class FlakySink(FakeSink):
    """Its broker answers only from the ``answers_after``-th connection attempt on."""

    def __init__(self, answers_after: int, exit_after: int | None = None) -> None:
        super().__init__(name="kafka")
        self.answers_after = answers_after
        self.exit_after = exit_after  # attempts, then what SIGTERM does
        self.attempts = 0
        self.readiness_seen: list[list[str]] = []
        self.daemon: Daemon | None = None
        self.closed = False

    def setup(self) -> None:
        self.attempts += 1
        if self.daemon is not None:
            self.readiness_seen.append(self.daemon.readiness())
            if self.exit_after is not None and self.attempts >= self.exit_after:
                self.daemon.request_exit()
        if self.attempts < self.answers_after:
            raise BrokerUnavailableError("kafka sink: cannot connect to nowhere:9092")

    def close(self) -> None:
        self.closed = True


def test_daemon_waits_for_a_broker_that_comes_up_late(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "_RETRY_FIRST_S", 0.01)
    sink = FlakySink(answers_after=3)
    monkeypatch.setattr(daemon_module, "build_sinks", lambda config, metrics, **_: [sink])
    daemon = Daemon(_config(checkpoint.path, frames, tmp_path))
    sink.daemon = daemon
    assert daemon.run() == 0
    assert sink.attempts == 3
    # /readyz says why, and where it looks: 503
    assert sink.readiness_seen[1] == [
        "waiting for kafka at localhost:9092 (kafka; kafka.bootstrap_servers)"
    ]
    assert len(sink.results) == 9 and len(sink.dead_letters) == 1  # then everything flowed


def test_stopping_while_waiting_for_the_broker_exits_cleanly(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "_RETRY_FIRST_S", 0.05)
    sink = FlakySink(answers_after=10**9, exit_after=2)  # never answers; stopped meanwhile
    monkeypatch.setattr(daemon_module, "build_sinks", lambda config, metrics, **_: [sink])
    daemon = Daemon(_config(checkpoint.path, frames, tmp_path))
    sink.daemon = daemon
    assert daemon.run() == 0
    assert sink.attempts == 2 and sink.closed and not sink.results


def test_a_restart_comes_back_with_the_sources_the_control_api_left(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path
) -> None:
    # First run: the YAML's source, plus one added and one paused through the API; the
    # daemon saves each change. Second run, same YAML: the line as the API left it.
    state_path = tmp_path / "state" / "line.json"
    token = "a-token-of-the-line-0123"
    base = _config(checkpoint.path, frames, tmp_path, loop=True).model_dump(mode="json")
    base["http"]["admin_token"] = token
    base["daemon"] = {"state_path": str(state_path), "drain_timeout_s": 10}
    more = {"type": "directory", "path": str(frames), "camera_id": "extra", "loop": True}

    def start() -> tuple[Daemon, threading.Thread, list[int]]:
        daemon = Daemon(InspectorConfig.model_validate(base), registry=CollectorRegistry())
        exit_code: list[int] = []
        thread = threading.Thread(target=lambda: exit_code.append(daemon.run()))
        thread.start()
        wait_until(
            lambda: daemon.control is not None or not thread.is_alive(), 60, "the daemon's start"
        )
        assert daemon.control is not None, "daemon did not start"
        return daemon, thread, exit_code

    def call(daemon: Daemon, method: str, path: str, body: object = None) -> tuple[int, object]:
        assert daemon.server is not None
        request = urllib.request.Request(
            f"http://127.0.0.1:{daemon.server.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    daemon, thread, exit_code = start()
    try:
        assert call(daemon, "POST", "/v1/sources", more)[0] == 201
        assert call(daemon, "POST", "/v1/sources/replay/pause")[0] == 200
    finally:
        daemon.request_exit()
        thread.join(60)
    assert exit_code == [0]
    saved = json.loads(state_path.read_text())
    assert [s["camera_id"] for s in saved["sources"]] == ["replay", "extra"]
    assert saved["paused"] == ["replay"]

    daemon, thread, exit_code = start()
    try:
        status, listed = call(daemon, "GET", "/v1/sources")
        assert status == 200 and isinstance(listed, list)
        assert [(s["id"], s["state"]) for s in listed] == [
            ("replay", "paused"),
            ("extra", "running"),
        ]
    finally:
        daemon.request_exit()
        thread.join(60)
    assert exit_code == [0]


def test_a_broken_state_file_is_an_error_naming_it(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path
) -> None:
    state_path = tmp_path / "line.json"
    state_path.write_text('{"version": 1, "sources": [{"type": "ftp"}]}')
    base = _config(checkpoint.path, frames, tmp_path).model_dump(mode="json")
    base["daemon"] = {"state_path": str(state_path)}
    daemon = Daemon(InspectorConfig.model_validate(base), registry=CollectorRegistry())
    with pytest.raises(ConfigError, match=r"daemon\.state_path: .*line\.json .*sources\.0"):
        daemon.run()  # the command line turns it into exit code 2


def test_plant_sinks_judge_late_by_the_live_recipes(
    checkpoint: LoadedCheckpoint, frames: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sinks are built before the recipes are restored; they get a lookup, not a copy, so a
    # recipe set over the control API (or restored from the state file) counts at once.
    from inspector.runtime.config import CameraRecipe

    handed: list[object] = []

    def build(config: InspectorConfig, metrics: object, **kwargs: object) -> list[FakeSink]:
        handed.append(kwargs["deadline_ms"])
        return [FakeSink()]

    monkeypatch.setattr(daemon_module, "build_sinks", build)
    base = _config(checkpoint.path, frames, tmp_path).model_dump(mode="json")
    base["cameras"] = {"replay": {"deadline_ms": 300}}
    daemon = Daemon(InspectorConfig.model_validate(base))
    assert daemon.run() == 0
    (deadline_ms,) = handed
    assert callable(deadline_ms) and deadline_ms("replay") == 300 and deadline_ms("other") is None
    assert daemon.control is not None  # its recipes: what PUT /v1/cameras/{id} edits
    daemon.control.recipes.set("replay", CameraRecipe(deadline_ms=40))
    assert deadline_ms("replay") == 40
