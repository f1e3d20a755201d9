"""Train OCBE + decoder on good images, calibrate on held-out ones, write one checkpoint."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from inspector.checkpoint import CheckpointMeta, save_checkpoint
from inspector.errors import DatasetError
from inspector.ml.calibration_fit import fit_calibration
from inspector.ml.config import TrainConfig
from inspector.ml.data import (
    LabelledImage,
    LoadedImages,
    labelled_items,
    load_items,
    split_train_val,
    training_items,
)
from inspector.ml.probes import with_probes
from inspector.ml.random_encoder import adapt_batchnorm, timm_init
from inspector.ml.regions import RegionImages, as_float, load_regions, score_regions
from inspector.ml.weights import load_encoder_weights
from inspector.model import ReverseDistillation, cosine_loss
from inspector.model.calibration import Calibration
from inspector.model.config import ArchitectureConfig
from inspector.model.device import resolve_device
from inspector.model.engine import Engine
from inspector.model.preprocess import IMAGENET, Preprocessing, normalise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    """Losses of one epoch.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: Mean training loss over the epoch's batches.
        val_loss: Loss on the held-out good images (eval mode).
        seconds: Wall time of the epoch including validation.
    """

    epoch: int
    train_loss: float
    val_loss: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        checkpoint: Written checkpoint file.
        sha256: Its SHA-256.
        history: One entry per epoch run.
        best_epoch: Epoch whose weights were kept (lowest validation loss).
        calibration: Fitted thresholds.
        skipped: Unreadable images ``(path, reason)``.
    """

    checkpoint: Path
    sha256: str
    history: list[EpochStats]
    best_epoch: int
    calibration: Calibration
    skipped: list[tuple[Path, str]]


def score_images(
    model: ReverseDistillation | Engine,
    images: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    preprocessing: Preprocessing = IMAGENET,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw image scores and anomaly maps in float32.

    Args:
        model: Model in eval mode, or an engine that runs one (an export: its own device).
        images: Float32 RGB in 0..1 at the model size, ``(N, 3, H, W)``.
        batch_size: Images per forward pass.
        device: Where to run a PyTorch model.
        preprocessing: The checkpoint's normalisation (default: what training here uses).

    Returns:
        Scores ``(N,)`` and maps ``(N, H, W)`` as numpy float32.
    """
    if isinstance(model, ReverseDistillation):
        model.eval()
        size = model.config.image_size
    else:
        device, size = model.device, model.image_size
    scores: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = normalise(images[start : start + batch_size].to(device), preprocessing)
            out = model(batch)
            scores.append(out.pred_score.float().cpu().numpy())
            maps.append(out.anomaly_map[:, 0].float().cpu().numpy())
    if not scores:
        return np.empty(0, np.float32), np.empty((0, *size), np.float32)
    return np.concatenate(scores), np.concatenate(maps)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    chunks = list(torch.split(order, batch_size))
    # Batch norm cannot train on a single image when the embedding is 1x1 (32-px inputs); a
    # lone leftover joins the previous batch rather than being dropped.
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def _prepare_random_encoder(
    model: ReverseDistillation, images: torch.Tensor, cfg: TrainConfig, device: torch.device
) -> int:
    """Initialise and adapt a random encoder as ``cfg`` says; returns the layers adapted."""
    if cfg.encoder_init == "timm":
        timm_init(model.encoder)
    if not cfg.adapt_batchnorm:
        return 0
    t0 = time.perf_counter()
    n = adapt_batchnorm(model.encoder, images, batch_size=cfg.batch_size, device=device)
    log.info(
        "adapted %d batch-norm layers to %d images in %.1f s",
        n,
        len(images),
        time.perf_counter() - t0,
    )
    return n


def _augment(images: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """``images`` ``(N, 3, H, W)``, each flipped horizontally and vertically at random if asked."""
    if not cfg.augment_flips:
        return images
    flips = torch.rand(2, len(images), generator=generator) < 0.5
    images = torch.where(flips[0, :, None, None, None], images.flip(-1), images)
    return torch.where(flips[1, :, None, None, None], images.flip(-2), images)


def _val_loss(
    model: ReverseDistillation, images: torch.Tensor, batch: int, dev: torch.device
) -> float:
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = normalise(as_float(images[start : start + batch]).to(dev))
            pair = model.features(chunk)
            total += float(cosine_loss(pair.encoder, pair.decoder)) * len(chunk)
    return total / len(images)


@dataclass(frozen=True)
class _Data:
    """What a training run reads: inputs split into train and held-out, and labelled extras."""

    loaded: LoadedImages
    regions: RegionImages | None
    train_images: torch.Tensor
    val_images: torch.Tensor
    val_idx: list[int]
    extra: LoadedImages


@dataclass(frozen=True)
class _Fitted:
    """The epochs run and the best of them (its weights are loaded back into the model)."""

    history: list[EpochStats]
    best_epoch: int
    best_loss: float


def _load_data(data_root: Path, cfg: TrainConfig, size: tuple[int, int]) -> _Data:
    """Read the training images (the region, tiled or resized, as the daemon shows the model)."""
    items = training_items(data_root)
    regions: RegionImages | None = None
    if cfg.roi is not None or cfg.tiling is not None:
        # What the daemon shows the model: the region, tiled or resized (inspector.ml.regions).
        regions = load_regions(items, size, cfg.roi, cfg.tiling)
        loaded = LoadedImages(regions.inputs, regions.items, skipped=regions.skipped)
        train_idx, val_idx = split_train_val(regions.frames, cfg.val_fraction, cfg.seed)
        train_images, val_images = regions.frame_inputs(train_idx), regions.frame_inputs(val_idx)
    else:
        loaded = load_items(items, size)
        train_idx, val_idx = split_train_val(len(loaded.items), cfg.val_fraction, cfg.seed)
        train_images, val_images = loaded.images[train_idx], loaded.images[val_idx]
    extra = load_items(labelled_items(data_root, "validation"), size, with_masks=True)
    return _Data(loaded, regions, train_images, val_images, val_idx, extra)


def _fit(
    model: ReverseDistillation,
    data: _Data,
    cfg: TrainConfig,
    device: torch.device,
    progress: bool,
) -> _Fitted:
    """Train the bottleneck and decoder; keep the weights of the best held-out loss."""
    train_images, val_images = data.train_images, data.val_images
    optimizer = torch.optim.Adam(
        model.trainable_parameters(), lr=cfg.learning_rate, betas=cfg.betas
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    autocast = device.type == "cuda"  # bf16 on CUDA only; CPU training stays fp32
    steps = len(_batches(len(train_images), cfg.batch_size, torch.Generator()))
    history: list[EpochStats] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    bar = tqdm(total=cfg.epochs * steps, disable=not progress, unit="step", dynamic_ncols=True)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for idx in _batches(len(train_images), cfg.batch_size, generator):
            batch = normalise(as_float(_augment(train_images[idx], cfg, generator)).to(device))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                pair = model.features(batch)
            loss = cosine_loss(pair.encoder, pair.decoder)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4f}")
        val = _val_loss(model, val_images, cfg.batch_size, device)
        history.append(EpochStats(epoch, float(np.mean(losses)), val, time.perf_counter() - t0))
        bar.set_postfix(epoch=epoch, loss=f"{history[-1].train_loss:.4f}", val=f"{val:.4f}")
        if val < best_loss - cfg.min_delta:
            best_loss, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
        elif cfg.patience and epoch - best_epoch >= cfg.patience:
            log.info(
                "early stop at epoch %d: no validation improvement since epoch %d",
                epoch,
                best_epoch,
            )
            break
    bar.close()
    model.load_state_dict(best_state)
    return _Fitted(history, best_epoch, best_loss)


def train(
    data_root: Path,
    out: Path,
    *,
    model_config: ArchitectureConfig,
    train_config: TrainConfig,
    name: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train, calibrate and save a Reverse Distillation model.

    Args:
        data_root: MVTec-style folder (``train/good``, optional ``validation/<class>`` with
            ``ground_truth`` masks for f1 calibration) or a plain folder of good images.
        out: Checkpoint file to write.
        model_config: Architecture.
        train_config: Hyper-parameters.
        name: Model name stored in the checkpoint (default: the data folder's name).
        progress: Show a progress bar with loss and ETA.

    Returns:
        What was trained and where it was written.

    Raises:
        DatasetError: Missing/empty data, or fewer than two readable images.
        WeightsUnavailableError: ImageNet weights asked for but not available.
    """
    started = time.perf_counter()
    cfg = train_config
    device = resolve_device(cfg.device)
    data = _load_data(data_root, cfg, model_config.image_size)
    torch.manual_seed(cfg.seed)
    model = ReverseDistillation(model_config)
    weights = load_encoder_weights(
        model.encoder, model_config.backbone, cfg.weights, download=cfg.download
    )
    model.to(device)
    adapted = (
        _prepare_random_encoder(model, data.train_images, cfg, device) if weights == "none" else 0
    )
    log.info(
        "training %s on %d images (%d held out) on %s",
        model_config.backbone,
        len(data.train_images),
        len(data.val_images),
        device,
    )
    fitted = _fit(model, data, cfg, device, progress)
    extra = data.extra
    if data.regions is None:
        calibration = _calibrate(
            model, data.val_images, extra.images, extra.items, extra.masks, cfg, device
        )
    else:
        calibration = _calibrate_regions(model, data_root, data.regions, data.val_idx, cfg, device)
    skipped = data.loaded.skipped + extra.skipped
    meta = CheckpointMeta(
        name=name or data_root.resolve().name,
        model=model_config,
        calibration=calibration,
        training={
            "data": str(data_root),
            "n_train": len(data.train_images),
            "n_val_good": len(data.val_images),
            "n_validation_extra": len(extra.items),
            "skipped": [str(p) for p, _ in skipped],
            "weights": weights,
            "encoder_init": cfg.encoder_init if weights == "none" else None,
            "batchnorm_adapted_layers": adapted,
            "roi": cfg.roi.model_dump() if cfg.roi else None,
            "tiling": cfg.tiling.model_dump() if cfg.tiling else None,
            "n_train_inputs": len(data.train_images),
            "device": str(device),
            "epochs_run": len(fitted.history),
            "best_epoch": fitted.best_epoch,
            "best_val_loss": fitted.best_loss,
            "history": [asdict(h) for h in fitted.history],
            "config": cfg.model_dump(mode="json"),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    model.cpu()
    # A few of the images trained on, and the fp32 model's values on them: every load checks
    # the served model against them.
    meta, probes = with_probes(meta, model, data.train_images, "training")
    sha = save_checkpoint(out, model, meta, probes)
    log.info("wrote %s (best epoch %d, val loss %.4f)", out, fitted.best_epoch, fitted.best_loss)
    return TrainResult(out, sha, fitted.history, fitted.best_epoch, calibration, skipped)


def _calibrate_regions(
    model: ReverseDistillation,
    data_root: Path,
    regions: RegionImages,
    val_idx: list[int],
    cfg: TrainConfig,
    device: torch.device,
) -> Calibration:
    """Thresholds on held-out frames scored as the daemon scores them (stitched, maximum)."""
    scores, maps = score_regions(model, regions, val_idx, batch_size=cfg.batch_size, device=device)
    labels = np.zeros(len(val_idx), int)
    masks = None
    extra_items = labelled_items(data_root, "validation")
    if extra_items:
        size = model.config.image_size
        extra = load_regions(extra_items, size, cfg.roi, cfg.tiling, with_masks=True)
        if extra.region_size != regions.region_size:
            raise DatasetError(
                f"validation frames' regions are {extra.region_size}, training frames' "
                f"{regions.region_size}: both must come from the same camera"
            )
        more_scores, more_maps = score_regions(
            model, extra, list(range(extra.frames)), batch_size=cfg.batch_size, device=device
        )
        scores, maps = np.concatenate([scores, more_scores]), np.concatenate([maps, more_maps])
        labels = np.concatenate([labels, [it.label for it in extra.items]])
        assert extra.masks is not None
        masks = np.concatenate([np.zeros((len(val_idx), *maps.shape[1:]), bool), extra.masks])
    return fit_calibration(
        scores,
        labels,
        maps,
        masks,
        mode=cfg.calibration,
        target_false_alarm_rate=cfg.target_false_alarm_rate,
    )


def _calibrate(
    model: ReverseDistillation,
    val_good: torch.Tensor,
    extra_images: torch.Tensor,
    extra_items: list[LabelledImage],
    extra_masks: torch.Tensor | None,
    cfg: TrainConfig,
    device: torch.device,
) -> Calibration:
    images = torch.cat([val_good, extra_images])
    labels = np.array([0] * len(val_good) + [it.label for it in extra_items])
    if not len(images):
        raise DatasetError("no validation images to calibrate on")
    scores, maps = score_images(model, images, batch_size=cfg.batch_size, device=device)
    masks = None
    if extra_masks is not None and len(extra_masks):
        masks = np.concatenate(
            [np.zeros((len(val_good), *maps.shape[1:]), bool), extra_masks.numpy()]
        )
    return fit_calibration(
        scores,
        labels,
        maps,
        masks,
        mode=cfg.calibration,
        target_false_alarm_rate=cfg.target_false_alarm_rate,
    )
