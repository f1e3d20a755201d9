"""Shared fixtures: a small synthetic dataset and a model trained on it once per session."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from inspector.checkpoint import LoadedCheckpoint, load_checkpoint
from inspector.ml.config import TrainConfig
from inspector.ml.trainer import TrainResult, train
from inspector.model.config import ArchitectureConfig
from inspector.tools.apache_kafka.jars import cache_dir as kafka_cache_dir
from inspector.tools.synth import SynthSummary, generate_dataset

#: Small enough for CI's two cores, large enough that a broken model is visibly at chance.
SYNTH_SIZE = 128
TRAIN_EPOCHS = 6


def pytest_configure(config: pytest.Config) -> None:
    # OpenVINO's converter (and NNCF) send usage telemetry to Google Analytics from a forked
    # process unless the user opted out; both fall back to a no-op stub when openvino_telemetry
    # cannot be imported. Tests never phone home, and the fast tier starts no process.
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    # precision auto caches its choice under $XDG_CACHE_HOME/inspector: tests (and the daemons
    # and commands they start) keep theirs in a folder of this run, never in the user's cache,
    # and no run reads a choice an earlier run measured. Apache Kafka's jars (fetched once, for
    # the integration broker) stay where they are: their folder is pinned before the move.
    os.environ.setdefault("INSPECTOR_KAFKA_CACHE", str(kafka_cache_dir()))
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="inspector-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("XDG_CACHE_HOME", ""), ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Training the session's model takes one to three minutes on CI's two cores, more than
    # the whole fast tier (`make unit`) may: a test that needs it is a component test.
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "component"
        ):
            item.add_marker(pytest.mark.component)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    # Deterministic, and no oversubscription when CI runs on two cores.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """A metal-surface dataset at 128 px with every defect kind."""
    root = tmp_path_factory.mktemp("synth")
    return generate_dataset(
        root,
        category="metal",
        seed=7,
        image_size=SYNTH_SIZE,
        n_train=40,
        n_test_good=12,
        n_test_per_defect=4,
    )


@pytest.fixture(scope="session")
def trained(synth_data: SynthSummary, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """resnet18, random encoder weights, 128 px, a few epochs: the CI-sized model."""
    out = tmp_path_factory.mktemp("model") / "rd.safetensors"
    return train(
        synth_data.root,
        out,
        model_config=ArchitectureConfig(backbone="resnet18", image_size=SYNTH_SIZE),
        train_config=TrainConfig(
            epochs=TRAIN_EPOCHS, batch_size=8, weights="none", device="cpu", patience=0, seed=0
        ),
        progress=False,
    )


@pytest.fixture(scope="session")
def checkpoint(trained: TrainResult) -> LoadedCheckpoint:
    """The trained model, loaded back from its file."""
    return load_checkpoint(trained.checkpoint)


@pytest.fixture()
def data_root(synth_data: SynthSummary) -> Path:
    """Root folder of the session's synthetic dataset."""
    return synth_data.root
