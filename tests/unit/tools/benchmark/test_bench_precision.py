"""``inspector bench``'s ``precision auto`` is the daemon's: measured, and in e2e shared."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry

from inspector.cli import main
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import load_served_model
from inspector.tools.benchmark.checkpoint import write_checkpoint
from inspector.tools.benchmark.e2e import _model_only, daemon_config_for
from inspector.tools.benchmark.options import (
    BenchOptions,
    decode_jpegs,
    full_batches,
    synthetic_jpegs,
)

CPU = torch.device("cpu")
SMALL = ["--backbone", "resnet18", "--image-size", "64", "--batch-size", "2", "--device", "cpu"]


def test_model_mode_runs_what_auto_measured(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="inspector.tools.benchmark.model"):
        code = main(["bench", *SMALL, "--frames", "4", "--warmup", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    chosen = re.search(r"precision auto: (\w+) \((.*)\)", caplog.text)
    assert chosen is not None, caplog.text
    # Timed on the path the measurement chose (the daemon's rule, not a CPU flag).
    assert result["precision"] == chosen.group(1)
    assert "measured on" in chosen.group(2) or "only fp32" in chosen.group(2)


def test_int8_is_refused_with_what_to_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *SMALL, "--frames", "4", "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert "--precision int8" in err and "--compare openvino" in err


def test_e2e_model_only_and_the_daemon_share_one_auto_choice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = BenchOptions(
        mode="e2e", backbone="resnet18", image_size=64, batch_size=2, frames=4, device="cpu",
        warmup=0,
    )  # fmt: skip
    jpegs = synthetic_jpegs(4, 64, 0)
    ckpt = write_checkpoint(tmp_path, options, CPU, jpegs)
    batches = full_batches(decode_jpegs(jpegs), 4, 2)
    cache = tmp_path / "auto-precision"
    before = _model_only(ckpt, CPU, options, batches, cache)
    (entry,) = cache.glob("auto-precision-*.json")
    choice = json.loads(entry.read_text())
    assert before.precision == choice["precision"]
    # Mark the entry: a run that measured again would log its own reason, and rewrite it.
    choice["reason"] = "measured before the daemon (marked by the test)"
    entry.write_text(json.dumps(choice))
    marked = entry.read_bytes()
    with caplog.at_level(logging.INFO, logger="inspector.tools.benchmark.e2e"):
        after = _model_only(ckpt, CPU, options, batches, cache)
    assert after.precision == before.precision
    assert "(marked by the test); cached" in caplog.text
    config = daemon_config_for(options, CPU, "localhost:9092", "tag", ckpt, cache)
    assert config.model.auto_cache_dir == cache
    daemon = load_served_model(None, ckpt, config, Metrics(CollectorRegistry()))
    assert daemon.worker.fast.precision == before.precision
    assert list(cache.glob("auto-precision-*.json")) == [entry] and entry.read_bytes() == marked
