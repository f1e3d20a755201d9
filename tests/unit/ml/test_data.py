from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inspector.errors import DatasetError
from inspector.ml.data import (
    labelled_items,
    load_items,
    split_train_val,
    training_items,
)
from inspector.model.preprocess import preprocess, to_tensor_rgb


def _write(path: Path, value: int = 128, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((size, size + 8, 3), value, np.uint8)
    img[5:15, 5:15] = (10, 200, 30)
    assert cv2.imwrite(str(path), img)


def test_mvtec_layout_and_plain_folder(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / "mv" / "train" / "good" / f"{i}.png")
        _write(tmp_path / "plain" / f"{i}.jpg")
    (tmp_path / "plain" / "notes.txt").write_text("not an image")
    assert [p.path.name for p in training_items(tmp_path / "mv")] == ["0.png", "1.png", "2.png"]
    assert len(training_items(tmp_path / "plain")) == 3


def test_missing_or_empty_folder_fails_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=str(tmp_path / "nope")):
        training_items(tmp_path / "nope")
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        training_items(tmp_path / "empty")


def test_labelled_items_pair_masks(tmp_path: Path) -> None:
    _write(tmp_path / "test" / "good" / "000.png")
    _write(tmp_path / "test" / "crack" / "000.png")
    _write(tmp_path / "test" / "crack" / "001.png")
    _write(tmp_path / "ground_truth" / "crack" / "000_mask.png", 255)
    items = labelled_items(tmp_path, "test")
    by_name = {(i.defect, i.path.name): i for i in items}
    assert by_name[("good", "000.png")].label == 0
    assert by_name[("crack", "000.png")].mask_path is not None
    assert by_name[("crack", "001.png")].label == 1
    assert by_name[("crack", "001.png")].mask_path is None
    assert labelled_items(tmp_path, "validation") == []


def test_corrupt_image_is_skipped_and_reported(tmp_path: Path) -> None:
    _write(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "c.jpg").write_bytes(b"")
    _write(tmp_path / "d.png")
    loaded = load_items(training_items(tmp_path), (32, 32))
    assert [i.path.name for i in loaded.items] == ["a.png", "d.png"]
    assert loaded.images.shape == (2, 3, 32, 32)
    assert {p.name for p, _ in loaded.skipped} == {"b.png", "c.jpg"}


def test_loaded_images_match_inference_preprocessing(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", size=100)
    loaded = load_items(training_items(tmp_path), (64, 64))
    img = cv2.imread(str(tmp_path / "a.png"))
    direct = preprocess(to_tensor_rgb(img).unsqueeze(0), (64, 64))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    torch.testing.assert_close((loaded.images - mean) / std, direct)


def test_split_is_seeded_disjoint_and_keeps_one_each_side() -> None:
    a = split_train_val(20, 0.1, seed=3)
    assert a == split_train_val(20, 0.1, seed=3)
    assert a != split_train_val(20, 0.1, seed=4)
    train, val = a
    assert len(val) == 2 and not set(train) & set(val) and len(train) + len(val) == 20
    assert split_train_val(2, 0.01, seed=0)[1] != []
    with pytest.raises(DatasetError, match="at least 2"):
        split_train_val(1, 0.1, seed=0)
