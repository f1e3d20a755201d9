"""Datasets on disk: MVTec AD layout or a plain folder of good images.

Images are decoded once, resized to the model's input size and kept in memory as float32 in
0..1 (exactly what :func:`inspector.model.preprocess.preprocess` produces before
normalisation), so epochs never touch the disk and a corrupt file is found, reported by path
and skipped before training starts instead of crashing it halfway.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inspector.errors import DatasetError, ImageDecodeError
from inspector.imaging import read_image
from inspector.model.preprocess import to_tensor_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class LabelledImage:
    """One image of a dataset.

    Attributes:
        path: Image file.
        label: 0 good, 1 anomalous.
        defect: ``good`` or the defect folder's name.
        mask_path: Ground-truth mask file for anomalous images, if any.
    """

    path: Path
    label: int = 0
    defect: str = "good"
    mask_path: Path | None = None


@dataclass
class LoadedImages:
    """Decoded, resized images ready for the model.

    Attributes:
        images: Float32 RGB in 0..1, shape ``(N, 3, H, W)`` at the model input size.
        items: The N images that loaded, in order.
        masks: Ground-truth masks ``(N, H, W)`` bool (all False where none), if loaded.
        skipped: ``(path, reason)`` of each file that could not be read.
    """

    images: torch.Tensor
    items: list[LabelledImage]
    masks: torch.Tensor | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_mvtec(root: Path) -> bool:
    """Whether ``root`` follows the MVTec AD layout (has ``train/good``)."""
    return (root / "train" / "good").is_dir()


def training_items(root: Path) -> list[LabelledImage]:
    """Good training images: ``root/train/good`` (MVTec layout) or the images in ``root``.

    Raises:
        DatasetError: The folder is missing or holds no images.
    """
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    folder = root / "train" / "good" if is_mvtec(root) else root
    paths = list_images(folder)
    if not paths:
        raise DatasetError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}; point --data at an "
            "MVTec-style folder (train/good/...) or a folder of good images"
        )
    return [LabelledImage(p) for p in paths]


def labelled_items(root: Path, split: str) -> list[LabelledImage]:
    """Images of ``root/<split>/<class>/`` with labels and MVTec ground-truth masks.

    ``good`` is label 0, every other folder is a defect class (label 1) whose masks are looked
    up as ``root/ground_truth/<class>/<stem>_mask.png``. Returns ``[]`` if the split is absent.
    """
    base = root / split
    if not base.is_dir():
        return []
    items: list[LabelledImage] = []
    for cls in sorted(p for p in base.iterdir() if p.is_dir()):
        for path in list_images(cls):
            if cls.name == "good":
                items.append(LabelledImage(path))
                continue
            mask = root / "ground_truth" / cls.name / f"{path.stem}_mask.png"
            items.append(LabelledImage(path, 1, cls.name, mask if mask.is_file() else None))
    return items


def resize_rgb(image_bgr: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """BGR uint8 ``(h, w, 3)`` -> float32 RGB ``(3, H, W)`` in 0..1, antialiased like inference."""
    x = to_tensor_rgb(image_bgr).unsqueeze(0).float() / 255.0
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x[0]


def read_mask(path: Path | None, size: tuple[int, int]) -> torch.Tensor:
    """Ground-truth mask ``(H, W)`` bool at ``size`` (all False without a file)."""
    if path is None:
        return torch.zeros(size, dtype=torch.bool)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ImageDecodeError(f"cannot read mask {path}")
    mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(mask > 127)


def load_items(
    items: list[LabelledImage], size: tuple[int, int], *, with_masks: bool = False
) -> LoadedImages:
    """Decode and resize ``items``; unreadable files are logged by path and skipped.

    Args:
        items: Images to load.
        size: Model input ``(H, W)``.
        with_masks: Also load ground-truth masks (for evaluation and calibration).

    Returns:
        The loaded images, their items, masks if asked, and the skipped files with reasons.
    """
    images: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    kept: list[LabelledImage] = []
    skipped: list[tuple[Path, str]] = []
    for item in items:
        try:
            image = resize_rgb(read_image(item.path), size)
            mask = read_mask(item.mask_path, size) if with_masks else None
        except ImageDecodeError as exc:
            log.warning("skipping unreadable image %s: %s", item.path, exc)
            skipped.append((item.path, str(exc)))
            continue
        images.append(image)
        kept.append(item)
        if mask is not None:
            masks.append(mask)
    if skipped:
        log.warning("skipped %d unreadable image(s) of %d", len(skipped), len(items))
    stacked = torch.stack(images) if images else torch.empty(0, 3, *size)
    mask_tensor = (
        (torch.stack(masks) if masks else torch.empty(0, *size, dtype=torch.bool))
        if with_masks
        else None
    )
    return LoadedImages(stacked, kept, mask_tensor, skipped)


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``n`` good images into training and held-out validation indices.

    At least one image goes to each side.

    Raises:
        DatasetError: Fewer than two images.
    """
    if n < 2:
        raise DatasetError(
            f"need at least 2 readable training images (one is held out for validation), got {n}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])
