"""Paths that name no checkpoint file are refused before reading: FIFOs, devices, folders, lies.

``/dev/zero`` given as a checkpoint once read without end (+1.2 GB RSS in half a second) and a
FIFO blocked the reading thread for good. Each hostile path must come back at once with an
error naming the file and what it is: from :func:`load_checkpoint`, from the command line (one
error line, exit 2), from an export's manifest and graph files, and over ``POST /v1/models``
(422). The thread joins below are hang guards, not speed assertions.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from fakes import serve_control, small_models
from prometheus_client import CollectorRegistry
from safetensors.torch import save as st_save

from inspector.backends.manifest import MANIFEST, ExportManifest, load_manifest, write_manifest
from inspector.checkpoint import CheckpointMeta, load_checkpoint
from inspector.cli import main
from inspector.errors import CheckpointFileError, ExportError
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import BatcherConfig, explicit_config
from inspector.runtime.metrics import Metrics
from inspector.runtime.pipeline import Pipeline

#: Generous: each call returns in milliseconds; this only stops a regression from hanging CI.
HANG_GUARD_S = 20.0
TOKEN = "t0ken-for-the-hostile-line-0123"


def _within_guard(work: Callable[[], Any]) -> Any:
    """Run ``work`` on a thread; fail (not hang) if it never returns; re-raise what it raised."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), "still reading a path it should have refused"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _unblock(fifo: Path) -> None:
    """Give a reader stuck on ``fifo`` (a regression) an end of file, so teardown can finish."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@dataclass(frozen=True)
class Hostile:
    path: Path
    says: str  # what the error must say about it


@pytest.fixture(
    params=["fifo", "dev-zero", "directory", "symlink-to-fifo", "terabyte-header", "past-end"]
)
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hostile]:
    kind = request.param
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    if kind == "fifo":
        case = Hostile(fifo, "is a FIFO (named pipe), not a regular file")
    elif kind == "dev-zero":
        case = Hostile(Path("/dev/zero"), "is a character device, not a regular file")
    elif kind == "directory":
        folder = tmp_path / "folder.safetensors"
        folder.mkdir()
        case = Hostile(folder, "is a directory, not a regular file")
    elif kind == "symlink-to-fifo":
        link = tmp_path / "link.safetensors"
        link.symlink_to(fifo)
        case = Hostile(link, "is a FIFO (named pipe), not a regular file")
    elif kind == "terabyte-header":
        liar = tmp_path / "terabyte.safetensors"
        liar.write_bytes((10**12).to_bytes(8, "little") + b'{"a": 1}')
        case = Hostile(liar, "header declares 1000000000000 bytes but the file holds 8")
    else:  # a real safetensors header, with the tensor data cut short
        data = st_save({"weight": torch.zeros(256)})
        cut = tmp_path / "cut.safetensors"
        cut.write_bytes(data[:-100])
        case = Hostile(cut, "places tensor 'weight' at bytes 0..1024 of the tensor data, but")
    try:
        yield case
    finally:
        _unblock(fifo)


def test_load_checkpoint_refuses_before_reading(hostile: Hostile) -> None:
    with pytest.raises(CheckpointFileError) as raised:
        _within_guard(lambda: load_checkpoint(hostile.path))
    message = str(raised.value)
    assert str(hostile.path) in message and hostile.says in message
    assert raised.value.exit_code == 2


def test_a_symlink_to_a_checkpoint_is_followed(tmp_path: Path) -> None:
    # The refusal is of what the path leads to, not of symlinks: a deploy's "current" link works.
    from inspector.checkpoint import save_checkpoint

    config = ArchitectureConfig(backbone="resnet18", image_size=(64, 64))
    real = tmp_path / "v1.safetensors"
    sha = save_checkpoint(real, ReverseDistillation(config), CheckpointMeta(name="m", model=config))
    (tmp_path / "current.safetensors").symlink_to(real)
    assert load_checkpoint(tmp_path / "current.safetensors").sha256 == sha


def test_the_command_line_prints_one_error_line_and_exits_2(
    hostile: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predict", "--checkpoint", str(hostile.path), "--out", str(tmp_path / "o"), "x.png"]
    assert _within_guard(lambda: main(argv)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert str(hostile.path) in errors[0] and hostile.says in errors[0]
    assert "Traceback" not in err


# --- exports: the manifest and the graph files it lists ----------------------------------------


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    """A sealed export folder (the graph is a stand-in: only its digest is checked here)."""
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"graph bytes")
    config = ArchitectureConfig(backbone="resnet18", image_size=(64, 64))
    write_manifest(
        folder,
        ExportManifest(
            graph_format="onnx",
            precision="fp32",
            files={},
            meta=CheckpointMeta(name="m", model=config),
            source_checkpoint_sha256="0" * 64,
        ),
    )
    assert load_manifest(folder).graph == folder / "model.onnx"  # sound before it is broken
    return folder


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_a_manifest_that_is_a_fifo_device_or_huge_is_refused(export: Path) -> None:
    manifest = export / MANIFEST
    _replace_with_fifo(manifest)
    try:
        with pytest.raises(ExportError, match=r"inspector-export\.json is a FIFO"):
            _within_guard(lambda: load_manifest(export))
    finally:
        _unblock(manifest)
    manifest.unlink()
    manifest.symlink_to("/dev/zero")
    with pytest.raises(ExportError, match=r"inspector-export\.json is a character device"):
        _within_guard(lambda: load_manifest(export))
    manifest.unlink()
    manifest.write_bytes(b" " * (4 * 1024 * 1024 + 1))
    with pytest.raises(ExportError, match=r"inspector-export\.json is 4194305 bytes, more than"):
        load_manifest(export)


@pytest.mark.parametrize("what", ["fifo", "directory", "dev-zero"])
def test_a_graph_file_that_is_not_a_regular_file_is_refused(export: Path, what: str) -> None:
    graph = export / "model.onnx"
    graph.unlink()
    if what == "fifo":
        os.mkfifo(graph)
    elif what == "directory":
        graph.mkdir()
    else:
        graph.symlink_to("/dev/zero")
    says = {
        "fifo": "a FIFO (named pipe)",
        "directory": "a directory",
        "dev-zero": "a character device",
    }
    try:
        with pytest.raises(ExportError) as raised:
            _within_guard(lambda: load_manifest(export))
    finally:
        if what == "fifo":
            _unblock(graph)
    message = str(raised.value)
    assert f"{graph} is {says[what]}, not a regular file" in message
    assert f"named in {export / MANIFEST}" in message


# --- over the control API ----------------------------------------------------------------------


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[str]:
    """A running line (no sources) with the control API on; yields its base URL."""
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=(64, 64))).eval()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = small_models(model, metrics)
    pipeline = Pipeline(
        [],
        BatcherConfig(max_batch_size=4, max_wait_ms=5),
        models,
        [],
        metrics,
        source_ids=[],
        keep_open=True,
    )
    pipeline.start()
    serving = explicit_config({"model": {"device": "cpu", "warmup_batches": 0}})
    server = serve_control(pipeline, models, registry, metrics, serving, TOKEN)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
        pipeline.stop_fetching()
        pipeline.close()


@pytest.mark.component  # serves the control API over HTTP
def test_post_models_answers_422_naming_the_file(api: str, hostile: Hostile) -> None:
    def post() -> requests.Response:
        return requests.post(
            f"{api}/v1/models",
            json={"name": "hostile", "checkpoint": str(hostile.path)},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=HANG_GUARD_S,
        )

    response = _within_guard(post)
    assert response.status_code == 422, response.text
    detail = response.json()["error"]
    assert str(hostile.path) in detail and hostile.says in detail
    # Nothing was added: the line serves what it served.
    listed = requests.get(f"{api}/v1/models", timeout=HANG_GUARD_S).json()
    assert [m["name"] for m in listed] == ["m"]
