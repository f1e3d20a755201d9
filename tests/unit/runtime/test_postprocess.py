from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
import torch

from inspector.errors import CheckpointError
from inspector.messages import Latency, ModelRef, ResultMessage
from inspector.model.calibration import Calibration
from inspector.runtime.config import PostprocessConfig
from inspector.runtime.postprocess import Postprocessor
from inspector.runtime.records import FrameMeta

CAL = Calibration(
    mode="good_only",
    image_threshold=1.0,
    image_min=0.0,
    image_max=2.0,
    pixel_threshold=1.0,
    pixel_min=0.0,
    pixel_max=2.0,
)
MODEL = ModelRef(name="m", backbone="resnet18", checkpoint_sha256="ab" * 32)


def _map_with_blob(size: int = 64) -> torch.Tensor:
    raw = torch.full((size, size), 0.2)
    raw[10:20, 30:46] = 1.8  # a 10 x 16 blob at the model's resolution
    raw[50, 5] = 1.5  # a single-pixel speck
    return raw


def test_regions_are_in_original_frame_pixels() -> None:
    post = Postprocessor(CAL, MODEL, PostprocessConfig(min_defect_area_px=20))
    decision = post.decide(_map_with_blob(), 1.8, (128, 256))  # frame is 2x taller, 4x wider
    assert decision.is_anomalous
    assert decision.mask is not None and decision.mask.shape == (128, 256)
    assert len(decision.defects) == 1  # the speck is below the minimum area once resized
    # The 16 x 10 blob at (30, 10) of the 64 x 64 map, scaled by 4 across and 2 down.
    assert decision.defects[0].bbox == (120, 20, 64, 20)
    assert decision.defects[0].centroid == (151.5, 29.5)
    assert decision.defects[0].area_px == 16 * 10 * 4 * 2
    # The mask is the region upscaled smoothly: its outline is within a pixel of the bbox.
    assert int(decision.mask.sum()) == pytest.approx(16 * 10 * 4 * 2, rel=0.02)
    rows, cols = np.nonzero(decision.mask)
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (120, 20, 184, 40)
    assert 0.5 < decision.defects[0].mean_score <= decision.defects[0].max_score <= 1.0


def test_normal_frame_has_no_mask_or_defects() -> None:
    post = Postprocessor(CAL, MODEL, PostprocessConfig())
    decision = post.decide(torch.full((32, 32), 0.3), 0.3, (32, 32))
    assert not decision.is_anomalous and decision.defects == [] and decision.mask is None
    assert decision.score == pytest.approx(0.5 + (0.3 - 1.0) / 2.0)


def test_config_threshold_really_takes_effect() -> None:
    raw = _map_with_blob()
    default = Postprocessor(CAL, MODEL, PostprocessConfig())
    strict = Postprocessor(CAL, MODEL, PostprocessConfig(image_threshold=0.95))
    assert default.decide(raw, 1.8, (64, 64)).is_anomalous
    assert not strict.decide(raw, 1.8, (64, 64)).is_anomalous
    assert strict.threshold.source == "config" and default.threshold.source == "checkpoint"
    loose = Postprocessor(CAL, MODEL, PostprocessConfig(pixel_threshold=0.05))
    assert loose.decide(raw, 1.8, (64, 64)).mask.all()  # type: ignore[union-attr]


def test_message_round_trips_with_mask() -> None:
    post = Postprocessor(CAL, MODEL, PostprocessConfig())
    decision = post.decide(_map_with_blob(), 1.8, (64, 64))
    frame = FrameMeta(
        frame_id="f1",
        camera_id="cam",
        image_size=(64, 64),
        source_topic="inspector.frames",
        source_partition=2,
        source_offset=9,
    )
    msg = post.to_message(frame, decision, Latency(total=3.0))
    parsed = ResultMessage.model_validate_json(msg.to_json())
    assert parsed.source is not None and parsed.source.offset == 9
    assert parsed.mask is not None
    png = np.frombuffer(base64.b64decode(parsed.mask.data), np.uint8)
    mask = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) > 127
    np.testing.assert_array_equal(mask, decision.mask)
    assert '"schema":"inspector.result/v1"' in msg.to_json()


def test_uncalibrated_checkpoint_is_refused() -> None:
    with pytest.raises(CheckpointError, match="no calibration"):
        Postprocessor(None, MODEL, PostprocessConfig())


def test_needs_map_agrees_with_decide() -> None:
    for overrides in ({}, {"image_threshold": 0.8}):
        post = Postprocessor(CAL, MODEL, PostprocessConfig(**overrides))  # type: ignore[arg-type]
        raw = torch.linspace(0.0, 2.0, 201)
        needed = post.needs_map(raw)
        for value, need in zip(raw.tolist(), needed.tolist(), strict=True):
            decision = post.decide(torch.full((8, 8), value), value, (8, 8))
            assert decision.is_anomalous == need


@pytest.mark.parametrize("threshold", [0.5, 0.55, 0.7, 0.8, 0.9])
def test_needs_map_agrees_with_decide_at_the_exact_boundary(threshold: float) -> None:
    # Awkward calibration numbers, and raw scores as the worker gives them (float32): every
    # float32 within 256 steps of the score that normalises exactly to the threshold. Computed
    # in float32, some of them land on the other side of the threshold than in float64.
    cal = CAL.model_copy(update={"image_threshold": 0.7311, "image_min": 0.013, "image_max": 1.9})
    post = Postprocessor(cal, MODEL, PostprocessConfig(image_threshold=threshold))
    edge = cal.image_threshold + (threshold - 0.5) * (cal.image_max - cal.image_min)
    bits = np.array([edge], dtype=np.float32).view(np.int32)[0] + np.arange(-256, 257)
    raw = torch.from_numpy(bits.astype(np.int32).view(np.float32).copy())
    needed = post.needs_map(raw)
    assert 0 < int(needed.sum()) < len(raw)  # both sides of the boundary are exercised
    for value, need in zip(raw.tolist(), needed.tolist(), strict=True):
        decision = post.decide(torch.full((8, 8), value), value, (8, 8))
        assert decision.is_anomalous == need


def test_normalise_score_is_normalise_image_for_one_score() -> None:
    cal = CAL.model_copy(update={"image_threshold": 0.7311, "image_min": 0.013, "image_max": 1.9})
    raw = torch.cat([torch.rand(500, dtype=torch.float64) * 3 - 0.5, torch.tensor([0.7311])])
    batch = cal.normalise_image(raw)
    for value, expected in zip(raw.tolist(), batch.tolist(), strict=True):
        assert cal.normalise_score(value) == expected  # exactly, not approximately
    assert cal.normalise_score(0.7311) == 0.5
    assert cal.normalise_score(0.2, threshold=0.2) == 0.5


def test_normalise_pixel_array_puts_the_threshold_at_one_half() -> None:
    cal = CAL.model_copy(update={"pixel_threshold": 0.61, "pixel_min": 0.02, "pixel_max": 1.7})
    raw = torch.rand(64, 48) * 6 - 3
    expected = ((raw - 0.61) / (1.7 - 0.02) + 0.5).clamp(0.0, 1.0).numpy()
    got = cal.normalise_pixel_array(raw.numpy())
    assert got.dtype == np.float32 and got.shape == (64, 48)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0  # clipped at both ends


def test_regions_on_a_frame_of_another_aspect_and_size() -> None:
    # A 256 x 256 map on a 1920 x 1080 frame: 7.5 frame pixels per map pixel across, 4.22 down.
    raw = torch.full((256, 256), 0.2)
    raw[100:120, 40:80] = 1.8
    decision = Postprocessor(CAL, MODEL, PostprocessConfig()).decide(raw, 1.8, (1080, 1920))
    assert decision.mask is not None and decision.mask.shape == (1080, 1920)
    (defect,) = decision.defects
    x, y, w, h = defect.bbox
    assert (x, y, x + w, y + h) == (300, 421, 600, 507)  # [40, 80) * 7.5, [100, 120) * 4.22
    assert defect.area_px == round(40 * 20 * 7.5 * 1080 / 256)
    rows, cols = np.nonzero(decision.mask)
    assert x <= cols.min() and cols.max() < x + w and y <= rows.min() and rows.max() < y + h
    assert int(decision.mask.sum()) == pytest.approx(defect.area_px, rel=0.02)
    cx, cy = defect.centroid
    assert cx == pytest.approx(450, abs=0.5) and cy == pytest.approx(464, abs=0.5)


def test_a_frame_without_its_map() -> None:
    post = Postprocessor(CAL, MODEL, PostprocessConfig())
    normal = post.decide(None, 0.3, (32, 32))
    assert not normal.is_anomalous and normal.heatmap is None and normal.mask is None
    with pytest.raises(ValueError, match="needs its anomaly map"):
        post.decide(None, 1.8, (32, 32))
