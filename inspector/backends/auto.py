"""``precision: auto`` measures: the fastest path that keeps the maps serves.

Each path this machine runs is timed; the choice is cached per machine and checkpoint.

No CPU-flag rule: the CPUs this project has met disagree (bf16 twice as fast as fp32 on one
AVX512-BF16 CPU, slower on another with the same flags), so the daemon asks the machine. The
candidates:

- ``fp32`` and, where oneDNN (CPU) or the GPU supports it, ``bf16`` autocast, on PyTorch. bf16
  passes the guard when its maps stay within :data:`MAP_TOLERANCE` of the calibrated pixel
  range (the maps' own scale) from the fp32 maps, on the timed batches.
- ``int8`` on OpenVINO (CPU), when the checkpoint carries an int8 record (``inspector
  quantize``: its guard compared image/pixel AUROC and AU-PRO with fp32 on held-out images) and
  OpenVINO is installed. The int8 graph is re-created from the good images the checkpoint
  stores (NNCF is deterministic on the same images) and kept in the cache; it passes when its
  maps on the stored held-out images are as close to fp32's as the record says (within
  :data:`INT8_SLACK` of the recorded difference). It serves with the re-fitted thresholds.

Timing runs a warm-up and a few batches at the configured batch size per path, the order
rotated every round. The cache is a JSON file per key (checkpoint digest, batch size, device,
CPU or GPU model, torch version, threads, switches) in ``model.auto_cache_dir``: a restart on
the same machine reads the choice instead of paying for the timings again; another machine,
torch or checkpoint measures anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from inspector.backends.convert import no_telemetry
from inspector.checkpoint import INT8_CALIBRATION, INT8_HELD_OUT, LoadedCheckpoint
from inspector.errors import BackendUnavailableError, CheckpointError, ConfigError
from inspector.model.engine import Backend, Engine
from inspector.model.fastpath import FastModel, RuntimeOptions
from inspector.model.preprocess import normalise

log = logging.getLogger(__name__)

#: Largest accepted bf16 map difference, as a share of the calibrated pixel range.
MAP_TOLERANCE = 0.02
#: A re-created int8 model may differ from fp32 by this factor of the recorded difference.
INT8_SLACK = 1.5
_WARMUP = 1
_ROUNDS = 3
AutoPrecision = Literal["fp32", "bf16", "int8"]
_INSTALL_OV = "pip install 'inspector[export]'"


@dataclass(frozen=True)
class AutoChoice:
    """What ``precision: auto`` chose, and why.

    Attributes:
        precision: The precision served.
        backend: The runtime that serves it (``openvino`` for int8).
        images_per_s: Measured throughput per candidate.
        max_map_difference: Per candidate, its largest map difference from fp32.
        refused: Candidates left out (the guard, or a missing package), with the reason.
        reason: One line for the log.
        cached: Read from the cache rather than measured now.
    """

    precision: AutoPrecision
    backend: Backend
    images_per_s: dict[str, float]
    max_map_difference: dict[str, float]
    refused: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    cached: bool = False


def candidates(device: torch.device) -> list[AutoPrecision]:
    """fp32, and bf16 where this device runs it at all (PyTorch)."""
    if device.type == "cuda":
        return ["fp32", "bf16"] if torch.cuda.is_bf16_supported() else ["fp32"]
    try:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # builds without oneDNN
        bf16 = False
    return ["fp32", "bf16"] if bf16 else ["fp32"]


def machine_id(device: torch.device) -> str:
    """The processor that runs the model, as its vendor names it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def cache_key(sha256: str, device: torch.device, batch_size: int, options: RuntimeOptions) -> str:
    """One file per checkpoint, machine, torch, batch size and fast-path switches."""
    parts = [
        sha256,
        machine_id(device),
        torch.__version__,
        _openvino_version(),
        str(batch_size),
        str(torch.get_num_threads()),
        f"cl={options.channels_last},compile={options.compile},graphs={options.cuda_graphs}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _openvino_version() -> str:
    no_telemetry()
    try:
        import openvino
    except ImportError:
        return "no-openvino"
    return str(openvino.__version__)


def choose(
    loaded: LoadedCheckpoint,
    device: torch.device,
    options: RuntimeOptions,
    *,
    batch_size: int,
    cache_dir: Path | None,
) -> tuple[AutoChoice, Engine]:
    """The fastest path whose maps pass the guard, from the cache or measured now.

    Args:
        loaded: The checkpoint (its int8 record and stored images, if any).
        device: Where it runs.
        options: The fast-path switches (``precision`` is what is chosen).
        batch_size: Timed batches have this many images.
        cache_dir: Where choices (and int8 graphs) are kept; ``None``: measure every time.

    Returns:
        The choice and the engine that runs it.
    """
    key = cache_key(loaded.sha256, device, batch_size, options)
    builders = _builders(loaded, device, options, batch_size, cache_dir, key)
    cached = _read(cache_dir, key)
    if cached is not None and cached.precision in builders:
        try:
            return cached, builders[cached.precision]()
        except (BackendUnavailableError, OSError, RuntimeError) as exc:
            log.warning("cannot rebuild the cached choice %s (%s); measuring again", key, exc)
    choice, engine = _measure(loaded, device, batch_size, builders)
    _write(cache_dir, key, choice)
    return choice, engine


def _builders(
    loaded: LoadedCheckpoint,
    device: torch.device,
    options: RuntimeOptions,
    batch_size: int,
    cache_dir: Path | None,
    key: str,
) -> dict[AutoPrecision, Callable[[], Engine]]:
    def torch_path(precision: AutoPrecision) -> Callable[[], Engine]:
        chosen = RuntimeOptions(**{**asdict(options), "precision": precision})
        return lambda: FastModel(loaded.model, device, chosen, batch_size=batch_size)

    out: dict[AutoPrecision, Callable[[], Engine]] = {p: torch_path(p) for p in candidates(device)}
    if loaded.meta.int8 is not None and device.type == "cpu":
        out["int8"] = lambda: _int8_engine(loaded, cache_dir, key)[0]
    return out


def serve_int8(
    loaded: LoadedCheckpoint,
    device: torch.device,
    options: RuntimeOptions,
    *,
    batch_size: int,
    cache_dir: Path | None,
) -> tuple[AutoChoice, Engine]:
    """``precision: int8``: the checkpoint's guarded int8 variant, on OpenVINO, without timing.

    The variant is the one ``precision: auto`` would time (same cache entry): re-created from
    the stored calibration images, or read from ``cache_dir``. A graph made now is checked on the
    stored held-out images against fp32 before it serves, as ``auto`` checks it.

    Raises:
        ConfigError: Not on the CPU, or the checkpoint has no int8 record.
        BackendUnavailableError: OpenVINO is not installed.
        CheckpointError: The re-created graph differs from fp32 more than the record allows.
    """
    if device.type != "cpu":
        raise ConfigError(
            f"model.precision int8 runs on the CPU (OpenVINO), but device {device} was asked "
            "for; use device: cpu, or precision auto/bf16 on a GPU"
        )
    record = loaded.meta.int8
    if record is None:
        raise ConfigError(
            f"model.precision int8: {loaded.path} has no int8 record; make one with `inspector "
            f"quantize --checkpoint {loaded.path} --good DIR --out NEW.safetensors` and serve "
            "that file"
        )
    key = cache_key(loaded.sha256, device, batch_size, options)
    engine, fresh = _int8_engine(loaded, cache_dir, key)
    difference = record.guard.max_map_difference
    if fresh:
        fp32 = FastModel(loaded.model, device, RuntimeOptions(precision="fp32"), batch_size=1)
        difference, allowed = _int8_difference(loaded, engine, fp32)
        if difference > allowed:
            _forget_int8(cache_dir, key)
            raise CheckpointError(
                f"{loaded.path}: the re-created int8 model differs from fp32 by "
                f"{difference:.4g} on the stored held-out images, more than the {allowed:.4g} "
                "its record allows; quantize again with this OpenVINO/NNCF, or use precision "
                "auto or fp32"
            )
    reason = (
        f"precision int8: {record.guard.method} on {record.guard.calibration_images} good "
        f"images, max map difference from fp32 {difference:.4g}"
    )
    return AutoChoice("int8", "openvino", {}, {"int8": difference}, {}, reason), engine


def _int8_difference(loaded: LoadedCheckpoint, int8: Engine, fp32: Engine) -> tuple[float, float]:
    """The int8 model's largest map difference from fp32 on the stored held-out images.

    Returns:
        The difference, and the largest the checkpoint's int8 record allows.
    """
    record = loaded.meta.int8
    assert record is not None
    held = _stored(loaded, INT8_HELD_OUT)
    fp32_maps = fp32(held.to(fp32.device)).anomaly_map.float().cpu()
    difference = float((int8(held).anomaly_map.float() - fp32_maps).abs().max())
    return difference, INT8_SLACK * record.guard.max_map_difference + 1e-3


def _forget_int8(cache_dir: Path | None, key: str) -> None:
    """Remove a cached int8 graph that failed its check, so the next start re-creates it."""
    if cache_dir is not None:
        shutil.rmtree(cache_dir / f"int8-{key}", ignore_errors=True)


def _int8_engine(loaded: LoadedCheckpoint, cache_dir: Path | None, key: str) -> tuple[Engine, bool]:
    """The checkpoint's int8 variant on OpenVINO, from the cache or quantized now (``True``)."""
    from inspector.backends.convert import openvino_model, quantize_openvino
    from inspector.backends.openvino import OpenVINOEngine, import_openvino

    ov = import_openvino()
    meta = loaded.meta
    xml = cache_dir / f"int8-{key}" / "model.xml" if cache_dir is not None else None
    fresh = xml is None or not xml.is_file()
    if not fresh:
        assert xml is not None
        model = ov.Core().read_model(str(xml))
    else:
        images = _stored(loaded, INT8_CALIBRATION)
        model, _ = quantize_openvino(
            openvino_model(loaded.model, meta, _INSTALL_OV), images.numpy(), meta, _INSTALL_OV
        )
        if xml is not None:
            try:
                xml.parent.mkdir(parents=True, exist_ok=True)
                ov.save_model(model, str(xml), compress_to_fp16=False)
            except (OSError, RuntimeError) as exc:
                log.warning("cannot keep the int8 graph in %s (%s)", xml.parent, exc)
    return OpenVINOEngine.from_model(model, "int8", meta.model.image_size), fresh


def _stored(loaded: LoadedCheckpoint, name: str) -> torch.Tensor:
    """Stored uint8 images as normalised model input ``(n, 3, H, W)``."""
    return normalise(loaded.extra[name].float() / 255, loaded.meta.preprocessing)


def _measure(
    loaded: LoadedCheckpoint,
    device: torch.device,
    batch_size: int,
    builders: dict[AutoPrecision, Callable[[], Engine]],
) -> tuple[AutoChoice, Engine]:
    engines: dict[AutoPrecision, Engine] = {}
    refused: dict[str, str] = {}
    for p, build in builders.items():
        try:
            engines[p] = build()
        except BackendUnavailableError as exc:
            refused[p] = str(exc)
    names = list(engines)
    if names == ["fp32"]:
        return AutoChoice("fp32", "torch", {}, {}, refused, f"only fp32 runs on {device}"), engines[
            "fp32"
        ]
    h, w = loaded.meta.model.image_size
    generator = torch.Generator().manual_seed(0)
    # Speed does not depend on the pixels.
    batch = torch.randn(batch_size, 3, h, w, generator=generator)
    times: dict[str, list[float]] = {p: [] for p in names}
    maps: dict[str, torch.Tensor] = {}
    for round_ in range(_WARMUP + _ROUNDS):
        shift = round_ % len(names)
        for p in names[shift:] + names[:shift]:  # no path always runs first, or last
            engine = engines[p]
            start = time.perf_counter()
            out = engine(batch.to(engine.device))
            if engine.device.type == "cuda":
                torch.cuda.synchronize(engine.device)
            if round_ >= _WARMUP:
                times[p].append(time.perf_counter() - start)
            maps[p] = out.anomaly_map.float().cpu()
    rates: dict[str, float] = {p: batch_size / statistics.median(t) for p, t in times.items()}
    diffs: dict[str, float] = {}
    cal = loaded.meta.calibration
    scale = cal.pixel_max - cal.pixel_min if cal is not None else float(maps["fp32"].max())
    for p in names:
        if p == "int8":
            diffs[p], allowed = _int8_difference(loaded, engines[p], engines["fp32"])
            if diffs[p] > allowed:
                refused[p] = (
                    f"the re-created int8 model differs from fp32 by {diffs[p]:.4g} on the "
                    f"stored held-out images, more than the {allowed:.4g} its record allows"
                )
            continue
        diffs[p] = float((maps[p] - maps["fp32"]).abs().max())
        if diffs[p] > MAP_TOLERANCE * max(scale, 1e-12):
            refused[p] = (
                f"maps differ from fp32 by {diffs[p]:.4g} (> {MAP_TOLERANCE:.0%} of {scale:.4g})"
            )
    kept = [p for p in names if p not in refused]
    best = max(kept, key=lambda p: rates[p])
    figures = ", ".join(f"{p} {rates[p]:.1f} images/s" for p in names)
    reason = f"measured on {machine_id(device)} at batch {batch_size}: {figures}"
    if refused:
        reason += "; left out: " + "; ".join(f"{p}: {why}" for p, why in refused.items())
    backend: Backend = "openvino" if best == "int8" else "torch"
    choice = AutoChoice(best, backend, rates, diffs, refused, reason)
    return choice, engines[best]


def _read(cache_dir: Path | None, key: str) -> AutoChoice | None:
    if cache_dir is None:
        return None
    path = cache_dir / f"auto-precision-{key}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        choice = AutoChoice(**{**data, "cached": True})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:  # unreadable: measure again, rewrite it
        log.warning("ignoring the precision cache %s (%s); measuring again", path, exc)
        return None
    if choice.precision not in ("fp32", "bf16", "int8"):
        return None
    return choice


def _write(cache_dir: Path | None, key: str, choice: AutoChoice) -> None:
    if cache_dir is None:
        return
    path = cache_dir / f"auto-precision-{key}.json"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({k: v for k, v in asdict(choice).items() if k != "cached"}, fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache costs the next start a measurement, no more
        log.warning(
            "cannot write the precision cache %s (%s); the next start measures again", path, exc
        )
