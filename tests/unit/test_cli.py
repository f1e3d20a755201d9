from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

from inspector.cli import main
from inspector.errors import InspectorError
from inspector.ml.config import TrainConfig
from inspector.tools.benchmark import BenchOptions
from inspector.tools.demo.setup import DemoOptions


def test_schema_command_prints_the_result_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$id"] == "inspector.result/v1"
    assert {"frame_id", "score", "defects", "mask", "latency_ms"} <= set(schema["properties"])


def test_image_size_not_multiple_of_32_exits_2(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--data",
            str(data_root),
            "--out",
            str(tmp_path / "m.safetensors"),
            "--image-size",
            "100",
            "--weights",
            "none",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "image_size" in err and "multiple of 32" in err and "96x96" in err


def test_missing_data_folder_names_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "m"),
            "--backbone",
            "resnet18",
            "--weights",
            "none",
            "--image-size",
            "64",
        ]
    )
    assert code == 1
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


def test_offline_imagenet_without_cache_is_actionable(
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code = main(
        [
            "train",
            "--data",
            str(data_root),
            "--out",
            str(tmp_path / "m"),
            "--backbone",
            "resnet18",
            "--image-size",
            "64",
            "--offline",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "resnet18-f37072fd.pth" in err and str(tmp_path / "torch") in err


# Trains a model, and eval's plots start matplotlib, whose first font scan in a fresh cache
# (conftest gives every run its own XDG_CACHE_HOME) runs `fc-list`: a subprocess.
@pytest.mark.component
def test_train_eval_predict_round_trip(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "train",
                "--data",
                str(data_root),
                "--out",
                str(ckpt),
                "--backbone",
                "resnet18",
                "--weights",
                "none",
                "--image-size",
                "64",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(data_root),
                "--json",
                str(tmp_path / "eval.json"),
                "--plots",
                str(tmp_path / "plots"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (tmp_path / "plots" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "scores.png").is_file()
    assert list((tmp_path / "plots" / "worst").glob("*.png"))
    crack = data_root / "test" / "crack"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "pred"),
                "--device",
                "cpu",
                "--image-threshold",
                "0.99",
                str(crack),
            ]
        )
        == 0
    )
    lines = (tmp_path / "pred" / "results.jsonl").read_text().splitlines()
    assert all(json.loads(x)["threshold"]["source"] == "config" for x in lines)


def test_truncated_checkpoint_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    code = main(["predict", "--checkpoint", str(bad), "--out", str(tmp_path / "o"), str(tmp_path)])
    err = capsys.readouterr().err
    # Its header declares 16 bytes, the file holds 2: refused before reading, a user error.
    assert code == 2 and str(bad) in err and "declares" in err


@pytest.mark.component  # runs `inspector` in a subprocess
def test_module_entry_point_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "inspector", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("inspector ")


class _CapturedError(InspectorError):
    """Raised by a replaced command body once it has the options the CLI built."""


def _capture(monkeypatch: pytest.MonkeyPatch, target: str, name: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> NoReturn:
        seen["args"], seen["kwargs"] = args, kwargs
        raise _CapturedError("captured")

    monkeypatch.setattr(importlib.import_module(target), name, record)
    return seen


def test_train_flags_reach_the_configs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _capture(monkeypatch, "inspector.ml.trainer", "train")
    argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.safetensors")]
    argv += ["--backbone", "resnet18", "--image-size", "96", "--ocbe-width", "64"]
    argv += ["--anomaly-map-mode", "multiply", "--lr", "0.01", "--offline", "--epochs", "3"]
    argv += ["--false-alarm-rate", "0.02", "--calibration", "good_only", "--weights", "none"]
    assert main(argv) == 1
    model, train = seen["kwargs"]["model_config"], seen["kwargs"]["train_config"]
    assert (model.backbone, model.image_size, model.ocbe_width) == ("resnet18", (96, 96), 64)
    assert model.anomaly_map_mode == "multiply"
    assert (train.learning_rate, train.download, train.epochs) == (0.01, False, 3)
    assert (train.target_false_alarm_rate, train.calibration) == (0.02, "good_only")
    assert train.weights == "none"
    # Flags not given keep the configs' defaults.
    assert train.batch_size == TrainConfig().batch_size
    assert train.patience == TrainConfig().patience


def test_demo_plain_turns_the_live_view_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture(monkeypatch, "inspector.tools.demo.runner", "run_demo")
    assert main(["demo", "--frames", "5", "--plain", "--fps", "0"]) == 1
    opts: DemoOptions = seen["args"][0]
    assert (opts.frames, opts.fps, opts.live) == (5, 0.0, False)
    assert opts.image_size == DemoOptions().image_size
    assert main(["demo"]) == 1
    assert seen["args"][0] == DemoOptions()  # live None: decided by the terminal


def test_demo_no_hires_drops_the_high_resolution_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture(monkeypatch, "inspector.tools.demo.runner", "run_demo")
    assert main(["demo", "--no-hires"]) == 1
    assert seen["args"][0] == DemoOptions(hires=False)
    assert main(["demo"]) == 1
    assert seen["args"][0].hires is True


def test_bench_records_a_command_that_reproduces_every_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = BenchOptions(
        mode="e2e",
        backbone="resnet34",
        image_size=128,
        batch_size=4,
        frames=40,
        device="cuda",
        precision="bf16",
        channels_last=False,
        compile=True,
        cuda_graphs=True,
        warmup=5,
        bootstrap_servers="broker:9092",
        decode_device="cuda",
        rate=12.5,
        seed=7,
    )
    seen = _capture(monkeypatch, "inspector.tools.benchmark", "run_benchmark")
    assert main(options.argv()[1:]) == 1
    assert seen["args"] == (options, options.argv())
    with_anomalib = BenchOptions(compare_anomalib=True, frames=8)
    assert main(with_anomalib.argv()[1:]) == 1
    assert seen["args"][0] == with_anomalib


@pytest.mark.component  # runs `inspector` in a subprocess
@pytest.mark.parametrize(
    ("blocked", "argv", "extra"),
    [
        ("sklearn", ["eval", "--checkpoint", "m.safetensors", "--data", "d"], "train"),
        ("tqdm", ["train", "--data", "d", "--out", "m.safetensors"], "train"),
        ("rich", ["demo"], "demo"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_pip_install(
    blocked: str, argv: list[str], extra: str, tmp_path: Path
) -> None:
    # As on a machine with `pip install inspector` alone: importing the library fails.
    script = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from inspector.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: inspector {argv[0]} needs the '{extra}' extra ({blocked} is not installed): "
        f"pip install 'inspector[{extra}]'"
    ], result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_key_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "daemon.yaml"
    config.write_text("kafka:\n  bootstrap_servers: broker:9092\n")
    monkeypatch.setenv("INSPECTOR_KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "INSPECTOR_KAFKA__BOOTSTRAP_SERVER (kafka.bootstrap_server)" in err


def test_a_yaml_syntax_error_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "daemon.yaml"
    config.write_text("kafka:\n  bootstrap_servers: [broker:9092\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "<unicode string>" not in err and "line 3" in err


def test_help_shows_defaults_choices_and_what_the_program_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--help"], ["synth", "--help"], ["train", "--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    out = capsys.readouterr().out
    assert "Streaming industrial inspection" in out and "only entry point" not in out
    assert "{metal,fabric,wood,tile}" in out  # synth's categories
    assert "--epochs EPOCHS       (default: 200)" in out  # train, from TrainConfig
    assert "INSPECTOR_KAFKA__BOOTSTRAP_SERVERS" in out and "drain_timeout_s=30.0" in out  # run
    assert out.count("Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.") == 4


_COMMANDS = [
    "synth",
    "train",
    "eval",
    "predict",
    "import-anomalib",
    "calibrate",
    "dataset",
    "run",
    "demo",
    "simulate",
    "bench",
    "schema",
]


@pytest.mark.parametrize("command", _COMMANDS)
def test_every_command_exits_2_on_bad_usage(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--no-such-flag"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    # Required arguments are reported first where a command has them (by the subcommand's
    # parser); unknown flags otherwise (by the top-level parser).
    assert f"inspector {command}: error:" in err or "inspector: error:" in err
    assert "unrecognized arguments: --no-such-flag" in err or "are required" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--checkpoint", "missing.safetensors", "--data", "."],
        ["predict", "--checkpoint", "missing.safetensors", "--out", "out", "x.png"],
        ["import-anomalib", "missing.ckpt", "--out", "m.safetensors"],
        ["train", "--data", "no-such-folder", "--out", "m.safetensors", "--weights", "none"],
    ],
)
def test_a_runtime_failure_exits_1_with_one_error_line(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")], err
    assert "Traceback" not in err


def test_synth_into_a_path_it_cannot_write_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["synth", "--out", str(blocker / "line"), "--n-train", "1"]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot write {blocker}" in err and "Traceback" not in err


def test_simulate_with_a_line_it_cannot_make_exits_1_before_any_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["simulate", "--data", str(blocker), "--frames", "1"]
    assert main([*argv, "--bootstrap-servers", "127.0.0.1:1"]) == 1
    assert f"error: cannot write {blocker}" in capsys.readouterr().err


@pytest.mark.component  # runs `inspector` in a subprocess
def test_schema_to_a_closed_stdout_exits_1_with_one_line() -> None:
    done = subprocess.run(
        ["sh", "-c", 'exec "$0" -m inspector schema >&-', sys.executable],
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: cannot write the schema to standard output")
    assert "Traceback" not in done.stderr
