"""``inspector calibrate``: thresholds re-fitted on good images or good scores meet the target.

The session's model (``checkpoint``) is given stale thresholds that flag nothing, so only a
refit can bring the false-alarm rate on new good images to the target. Calibration and
held-out images are new synthetic good images (other seeds than the training data).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from inspector.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from inspector.cli import main
from inspector.errors import CalibrationError, CheckpointError, ConfigError, DatasetError
from inspector.messages import ModelRef
from inspector.ml.calibrate import RecalibrateConfig, RecalibrationReport, recalibrate
from inspector.ml.good_samples import read_good_scores
from inspector.ml.predict import predict
from inspector.model.calibration import Calibration
from inspector.runtime.config import PostprocessConfig
from inspector.runtime.postprocess import Postprocessor
from inspector.tools.synth import generate_dataset

TARGET = 0.2
N_CAL = 150  # good images calibrated on
N_HELD_OUT = 100  # good images the rate is measured on
# The measured rate spreads binomially over the held-out images, sqrt(p (1 - p) / M), and the
# threshold, a quantile of N calibration scores, carries its own binomial error of
# sqrt(p (1 - p) / N): sd = sqrt(0.2 * 0.8 * (1/150 + 1/100)) = 0.052. Three sd: 0.155, so a
# correct refit lands in [0.045, 0.355], and the stale thresholds (rate 0) fail.
SD = math.sqrt(TARGET * (1 - TARGET) * (1 / N_CAL + 1 / N_HELD_OUT))
TOLERANCE = 3 * SD

CONFIG = RecalibrateConfig(
    target_false_alarm_rate=TARGET, device="cpu", precision="fp32", auto_cache_dir=None
)


@pytest.fixture(autouse=True)
def _private_auto_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The command line's precision auto caches its choice in the daemon's default folder.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@dataclass(frozen=True)
class Line:
    """The images and files the tests share."""

    stale: Path  # the session's model with thresholds that flag nothing
    stale_sha256: str
    stale_calibration: Calibration
    stale_loaded: LoadedCheckpoint
    calibration: Path  # folder of N_CAL good images
    held_out: Path  # folder of N_HELD_OUT good images
    results: Path  # predict's results.jsonl for the calibration images (stale checkpoint)
    maps_dir: Path  # predict's raw maps of the calibration images
    held_out_scores: np.ndarray  # raw scores of the held-out images, the daemon's path


def _good_images(root: Path, seed: int, n: int, size: int) -> Path:
    generate_dataset(
        root, seed=seed, image_size=size, n_train=n, n_test_good=0, n_test_per_defect=0
    )
    return root / "train" / "good"


def _raw_scores(results: Path) -> np.ndarray:
    return np.array([json.loads(line)["raw_score"] for line in results.read_text().splitlines()])


@pytest.fixture(scope="module")
def line(checkpoint: LoadedCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Line:
    root = tmp_path_factory.mktemp("calibrate")
    cal = checkpoint.meta.calibration
    assert cal is not None
    span = cal.image_max - cal.image_min
    stale_cal = cal.model_copy(
        update={
            "image_threshold": cal.image_max + 100 * span,
            "pixel_threshold": cal.pixel_max + 100 * span,
        }
    )
    stale = root / "stale.safetensors"
    save_checkpoint(
        stale, checkpoint.model, checkpoint.meta.model_copy(update={"calibration": stale_cal})
    )
    size = checkpoint.meta.model.image_size[0]  # the session's synthetic line
    calibration = _good_images(root / "cal", seed=101, n=N_CAL, size=size)
    held_out = _good_images(root / "held_out", seed=202, n=N_HELD_OUT, size=size)
    loaded = load_checkpoint(stale)
    predict(
        loaded, [calibration], root / "cal_pred", save_maps=True, overlays=False, precision="fp32"
    )
    predict(loaded, [held_out], root / "held_pred", overlays=False, precision="fp32")
    return Line(
        stale,
        loaded.sha256,
        stale_cal,
        loaded,
        calibration,
        held_out,
        root / "cal_pred" / "results.jsonl",
        root / "cal_pred" / "maps",
        _raw_scores(root / "held_pred" / "results.jsonl"),
    )


def false_alarm_rate(calibration: Calibration | None, raw_scores: np.ndarray) -> float:
    """Share of good frames the daemon flags: the postprocessor's own image decision."""
    ref = ModelRef(name="m", backbone="resnet18", checkpoint_sha256="0" * 64)
    post = Postprocessor(calibration, ref, PostprocessConfig())
    return float(post.needs_map(torch.from_numpy(raw_scores)).float().mean())


@pytest.fixture(scope="module")
def from_images(
    line: Line, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RecalibrationReport, LoadedCheckpoint]:
    out = tmp_path_factory.mktemp("from_images") / "recalibrated.safetensors"
    report = recalibrate(line.stale, out, CONFIG, good=line.calibration)
    return report, load_checkpoint(out)


def test_good_images_give_the_target_false_alarm_rate_on_held_out_images(
    line: Line,
    from_images: tuple[RecalibrationReport, LoadedCheckpoint],
    checkpoint: LoadedCheckpoint,
) -> None:
    report, loaded = from_images
    stale_rate = false_alarm_rate(line.stale_calibration, line.held_out_scores)
    measured = false_alarm_rate(loaded.meta.calibration, line.held_out_scores)
    print(
        f"\nimages: target {TARGET}, held-out {measured:.3f} (±{TOLERANCE:.3f}), stale {stale_rate}"
    )
    # The check can fail: without a refit the stale thresholds flag nothing.
    assert abs(stale_rate - TARGET) > TOLERANCE
    assert abs(measured - TARGET) <= TOLERANCE
    assert report.n_samples == N_CAL and report.pixel_refitted and report.source == "images"
    assert report.calibration_false_alarm_rate == pytest.approx(TARGET, abs=1 / N_CAL)
    # Scored on the daemon's path: the same raw scores and map range as `inspector predict`.
    scores = _raw_scores(line.results)
    maps = np.stack([np.load(p) for p in sorted(line.maps_dir.glob("*.npy"))])
    after = loaded.meta.calibration
    assert after is not None and after.mode == "good_only"
    assert after.image_threshold == pytest.approx(np.quantile(scores, 1 - TARGET), rel=1e-5)
    assert after.pixel_threshold == after.image_threshold
    assert (after.pixel_min, after.pixel_max) == pytest.approx((maps.min(), maps.max()), rel=1e-5)
    # Only the calibration changed; the history names the checkpoint it came from.
    for key, tensor in checkpoint.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], tensor), key
    (entry,) = loaded.meta.training["recalibrations"]
    assert entry["from_sha256"] == line.stale_sha256 and entry["source"] == "images"
    assert entry["before"]["image_threshold"] == line.stale_calibration.image_threshold


def test_scores_of_good_frames_give_the_target_false_alarm_rate(
    line: Line, from_images: tuple[RecalibrationReport, LoadedCheckpoint], tmp_path: Path
) -> None:
    out = tmp_path / "from_scores.safetensors"
    report = recalibrate(line.stale, out, CONFIG, scores=line.results)
    after = load_checkpoint(out).meta.calibration
    measured = false_alarm_rate(after, line.held_out_scores)
    print(f"\nscores: target {TARGET}, held-out {measured:.3f} (±{TOLERANCE:.3f})")
    assert abs(measured - TARGET) <= TOLERANCE
    # The same frames give the same image threshold as their images; the pixel threshold
    # cannot be refitted without maps and is kept, and the summary says so.
    by_images, before = from_images[1].meta.calibration, line.stale_calibration
    assert after is not None and by_images is not None
    assert after.image_threshold == pytest.approx(by_images.image_threshold, rel=1e-5)
    assert (after.pixel_threshold, after.pixel_min) == (before.pixel_threshold, before.pixel_min)
    assert not report.pixel_refitted and "kept" in report.summary()


def test_scores_of_another_checkpoint_are_refused_by_line(line: Line, tmp_path: Path) -> None:
    scores = tmp_path / "good.jsonl"
    lines = line.results.read_text().splitlines()[:4]
    other = json.loads(lines[2])
    other["model"]["checkpoint_sha256"] = "f" * 64
    lines[2] = json.dumps(other)
    scores.write_text("\n".join([*lines, '{"raw_score": 0.5}']) + "\n")
    config = CONFIG.model_copy(update={"target_false_alarm_rate": 0.5})
    with pytest.raises(CalibrationError, match=r"good.jsonl line 3: .*ffffffffffff.*--allow-other"):
        recalibrate(line.stale, tmp_path / "out.safetensors", config, scores=scores)
    assert not (tmp_path / "out.safetensors").exists()
    allowed = config.model_copy(update={"allow_other_checkpoint": True})
    report = recalibrate(line.stale, tmp_path / "out.safetensors", allowed, scores=scores)
    assert report.n_samples == 5


def test_results_of_the_checkpoint_recalibrated_from_are_accepted(
    line: Line, from_images: tuple[RecalibrationReport, LoadedCheckpoint], tmp_path: Path
) -> None:
    # Same weights: the stale checkpoint's results are the recalibrated one's raw scores.
    recalibrated = from_images[1].path
    report = recalibrate(recalibrated, tmp_path / "again.safetensors", CONFIG, scores=line.results)
    again = load_checkpoint(tmp_path / "again.safetensors")
    assert report.n_samples == N_CAL
    assert [e["from_sha256"] for e in again.meta.training["recalibrations"]] == [
        line.stale_sha256,
        from_images[1].sha256,
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no result lines"),
        (b"\n  \n", "holds no result lines"),
        (b'{"raw_score": 1.0}\n{"score": 0.3}\n', r"line 2: .*raw_score"),
        (b'{"raw_score": NaN}\n', r"line 1: .*finite"),
        (b"not json\n", "line 1"),
        (b"\xff\xfe\x00", "cannot read"),
    ],
)
def test_empty_or_malformed_scores_file(
    line: Line, tmp_path: Path, content: bytes, message: str
) -> None:
    scores = tmp_path / "good.jsonl"
    scores.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_good_scores(scores, line.stale_loaded, allow_other=False)


def test_too_few_samples_for_the_target(line: Line, tmp_path: Path) -> None:
    scores = tmp_path / "good.jsonl"
    scores.write_text("".join(f'{{"raw_score": {0.1 * i}}}\n' for i in range(20)))
    rare = CONFIG.model_copy(update={"target_false_alarm_rate": 0.01})
    with pytest.raises(CalibrationError, match=r"20 good sample.*at least 100 .*1000 .*advised"):
        recalibrate(line.stale, tmp_path / "out.safetensors", rare, scores=scores)
    # Enough to fit, too few for a tight rate: written, with a warning that says how many.
    report = recalibrate(line.stale, tmp_path / "out.safetensors", CONFIG, scores=scores)
    assert report.warnings and "50 (10/rate) advised" in report.warnings[0]


def test_imported_checkpoint_without_thresholds_becomes_usable(
    line: Line, checkpoint: LoadedCheckpoint, tmp_path: Path
) -> None:
    # What `import-anomalib` writes when the source has no usable thresholds.
    imported = tmp_path / "imported.safetensors"
    meta = checkpoint.meta.model_copy(
        update={
            "calibration": None,
            "training": {"imported_from": "anomalib", "calibration_imported": False},
        }
    )
    save_checkpoint(imported, checkpoint.model, meta)
    held_out = sorted(line.held_out.iterdir())[:4]
    with pytest.raises(CheckpointError, match="no calibration"):  # the daemon refuses it too
        predict(load_checkpoint(imported), held_out, tmp_path / "before", overlays=False)
    with pytest.raises(ConfigError, match="--good"):
        recalibrate(imported, tmp_path / "out.safetensors", CONFIG, scores=line.results)

    few = tmp_path / "good"
    few.mkdir()
    for path in sorted(line.calibration.iterdir())[:20]:
        shutil.copy(path, few / path.name)
    out = tmp_path / "usable.safetensors"
    report = recalibrate(imported, out, CONFIG, good=few)
    assert report.before is None and "image threshold none ->" in report.summary()
    summary = predict(load_checkpoint(out), held_out, tmp_path / "after", overlays=False)
    assert summary.n_images == 4
    for text in summary.results.read_text().splitlines():
        assert 0.0 <= json.loads(text)["score"] <= 1.0


def test_cli_writes_a_loadable_checkpoint_and_leaves_the_input_alone(
    line: Line, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = line.stale.read_bytes()
    out, report = tmp_path / "new.safetensors", tmp_path / "report.json"
    argv = ["calibrate", "--checkpoint", str(line.stale), "--scores", str(line.results)]
    argv += ["--false-alarm-rate", str(TARGET), "--out", str(out), "--json", str(report)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and f"wrote {out}" in printed and " -> " in printed
    assert line.stale.read_bytes() == original
    written = load_checkpoint(out)
    assert json.loads(report.read_text())["out_sha256"] == written.sha256
    # --out naming the input replaces it in place (the daemon's file, then SIGHUP).
    in_place = tmp_path / "served.safetensors"
    shutil.copy(line.stale, in_place)
    argv = ["calibrate", "--checkpoint", str(in_place), "--scores", str(line.results)]
    assert main([*argv, "--false-alarm-rate", str(TARGET), "--out", str(in_place)]) == 0
    replaced = load_checkpoint(in_place)
    assert replaced.meta.calibration == written.meta.calibration
    assert replaced.sha256 != line.stale_sha256
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_cli_exit_codes(line: Line, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    base = ["calibrate", "--checkpoint", str(line.stale), "--out", str(out)]
    rate = ["--false-alarm-rate", "0.1"]
    with pytest.raises(SystemExit) as exited:  # neither --good nor --scores
        main([*base, *rate])
    assert exited.value.code == 2
    assert main([*base, "--scores", str(line.results), "--false-alarm-rate", "1.5"]) == 2
    assert "target_false_alarm_rate" in capsys.readouterr().err
    assert main([*base, *rate, "--good", str(tmp_path / "nowhere")]) == 2
    assert "--good" in capsys.readouterr().err
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    argv = ["calibrate", "--checkpoint", str(garbage), "--out", str(out), *rate]
    # Its first 8 bytes declare a header far larger than the file: refused before reading.
    assert main([*argv, "--scores", str(line.results)]) == 2
    assert str(garbage) in capsys.readouterr().err
    unreadable = tmp_path / "scores.jsonl"
    unreadable.write_bytes(b"\xff\xfe")
    assert main([*base, *rate, "--scores", str(unreadable)]) == 1
    assert str(unreadable) in capsys.readouterr().err
    assert not out.exists()
