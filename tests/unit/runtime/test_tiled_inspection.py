"""Regions of interest and tiling in the daemon: recipes, the model worker, postprocess, pipeline.

A small random-weight model (64 px, so 64 px tiles) is enough here: these tests are about
shapes, geometry and routing. That tiling finds what resizing loses is
``test_tiled_detection.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from fakes import UNIT_CALIBRATION, FakeSink, FakeSource, make_frame, serve_control, small_models
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from waiting import wait_until

from inspector.checkpoint import CheckpointMeta, save_checkpoint
from inspector.errors import ConfigError
from inspector.messages import ModelRef
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.model.tiling import Roi
from inspector.runtime.config import (
    BatcherConfig,
    InspectorConfig,
    PostprocessConfig,
    explicit_config,
)
from inspector.runtime.daemon import Daemon
from inspector.runtime.metrics import Metrics
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.postprocess import Postprocessor
from inspector.runtime.recipes import CameraRecipe, Recipes, RoiConfig, TilingConfig
from inspector.runtime.regions import FrameView, plan_view
from inspector.runtime.routing import ModelRouter
from inspector.runtime.worker import ModelWorker

SIZE = 64  # the model's input, so the tile
TILED = CameraRecipe(tiling=TilingConfig(tile=SIZE, overlap=16))


@pytest.fixture(scope="module")
def model() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=SIZE)).eval()


def _worker(model: ReverseDistillation, max_batch_size: int) -> ModelWorker:
    return ModelWorker(
        model,
        torch.device("cpu"),
        Metrics(CollectorRegistry()),
        warmup_batches=0,
        max_batch_size=max_batch_size,
    )


def _images(*sizes: tuple[int, int]) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _reference(model: ReverseDistillation, region: torch.Tensor, view: FrameView) -> np.ndarray:
    """The region's map by hand: each tile through the model alone, blended with numpy."""
    grid = view.grid
    assert grid is not None
    t, overlap = grid.tile, grid.overlap
    ramp = np.minimum(np.minimum(np.arange(t) + 0.5, t - np.arange(t) - 0.5) / overlap, 1.0)
    weight = np.outer(ramp, ramp)
    h, w = view.region_size
    total, weights = np.zeros((h, w)), np.zeros((h, w))
    for y, x in grid.origins:
        tile = region[:, y : y + t, x : x + t].unsqueeze(0)
        with torch.inference_mode():
            tile_map = model(preprocess(tile, (SIZE, SIZE))).anomaly_map[0, 0].numpy()
        total[y : y + t, x : x + t] += weight * tile_map
        weights[y : y + t, x : x + t] += weight
    out: np.ndarray = total / weights
    return out


def test_stitched_maps_equal_a_tile_by_tile_reference(model: ReverseDistillation) -> None:
    images = _images((150, 200), (130, 170), (100, 90))
    recipes = [
        TILED,
        CameraRecipe(
            roi=RoiConfig(x=35, y=30, width=100, height=70, angle=20), tiling=TILED.tiling
        ),
        CameraRecipe(roi=RoiConfig(x=5, y=5, width=80, height=70)),  # an roi, resized
    ]
    views = [plan_view(r, i.shape[:2], (SIZE, SIZE)) for r, i in zip(recipes, images, strict=True)]
    assert all(v is not None for v in views)
    planned = [v for v in views if v is not None]
    assert [v.inputs for v in planned] == [12, 4, 1]
    # Chunks of 5 cut across frames (17 inputs): tiles of one frame end up in two model batches.
    scored = _worker(model, max_batch_size=5).score_views(images, planned)

    for image, view, raw in zip(images, planned, scored.maps, strict=True):
        assert raw is not None
        region = view.roi.extract(to_tensor_rgb(image)) if view.roi else to_tensor_rgb(image)
        if view.grid is None:  # resized like a whole frame
            with torch.inference_mode():
                expected = model(preprocess(region[None], (SIZE, SIZE))).anomaly_map[0, 0].numpy()
        else:
            expected = _reference(model, region, view)
        assert raw.shape == expected.shape
        np.testing.assert_allclose(raw.numpy(), expected, rtol=1e-4, atol=1e-5)
    # The image score is the maximum of the stitched map.
    torch.testing.assert_close(
        scored.scores, torch.stack([m.amax() for m in scored.maps if m is not None])
    )


def test_tiles_run_at_the_fast_paths_batch_shape_whatever_the_chunking(
    model: ReverseDistillation,
) -> None:
    images = _images((150, 200), (150, 200))
    views = [plan_view(TILED, (150, 200), (SIZE, SIZE))] * 2
    planned = [v for v in views if v is not None]
    worker = _worker(model, max_batch_size=8)
    shapes: list[tuple[int, ...]] = []
    fast = worker.fast.__call__

    def spy(batch: torch.Tensor) -> Any:
        shapes.append(tuple(batch.shape))
        return fast(batch)

    worker.fast = spy  # type: ignore[assignment]
    eight = worker.score_views(images, planned, map_filter=lambda s: s > s.max())
    # 24 tiles: three full batches of 8, each (8, 3, 64, 64); the CUDA graph's shape.
    assert shapes == [(8, 3, SIZE, SIZE)] * 3
    assert eight.maps == [None, None]  # the filter asked for no map: none left the device
    three = _worker(model, max_batch_size=3).score_views(images, planned)
    torch.testing.assert_close(eight.scores, three.scores, rtol=1e-4, atol=1e-5)


# --- postprocess: defects in full-frame pixels -----------------------------------------------


def _blob_map(shape: tuple[int, int], y: int, x: int) -> torch.Tensor:
    raw = torch.full(shape, 0.1)
    raw[y : y + 6, x : x + 8] = 0.9  # a 6 x 8 region at (x, y)
    return raw


@pytest.mark.parametrize(
    ("roi", "bbox"),
    [
        (None, (30, 20, 8, 6)),
        (Roi(x=100, y=50, width=64, height=48), (130, 70, 8, 6)),
        # 90 degrees counter-clockwise: ROI x runs up the frame, ROI y to the right.
        (Roi(x=100, y=50, width=64, height=48, angle=90), (128, 68, 6, 8)),
    ],
)
def test_defects_mask_and_heat_map_are_reported_in_frame_pixels(
    roi: Roi | None, bbox: tuple[int, int, int, int]
) -> None:
    frame = (200, 300)
    region = roi.size if roi is not None else frame
    post = Postprocessor(
        UNIT_CALIBRATION,
        ModelRef(name="m", backbone="resnet18", checkpoint_sha256="0" * 64),
        PostprocessConfig(min_defect_area_px=4),
    )
    view = FrameView(frame, roi, None)
    decision = post.decide(_blob_map(region, 20, 30), 0.9, frame, view)
    assert decision.is_anomalous and len(decision.defects) == 1
    defect = decision.defects[0]
    assert defect.bbox == bbox and defect.area_px == 48
    assert decision.mask is not None and decision.mask.shape == frame
    x, y, w, h = bbox
    assert decision.mask[y : y + h, x : x + w].all() and decision.mask.sum() == 48
    cx, cy = defect.centroid
    assert x <= cx <= x + w and y <= cy <= y + h
    assert decision.heatmap is not None
    heat = decision.heatmap
    assert heat.shape == frame  # a map of the region at its own density, placed in the frame
    assert heat[y : y + h, x : x + w].min() > 0.5 and heat.max() <= 1.0


# --- recipes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"tiling": {"tile": 250}}, "not a multiple of 32"),
        ({"tiling": {"tile": 256, "overlap": 256}}, "overlap 256 must be smaller than tile 256"),
        ({"roi": {"x": 0, "y": 0, "width": 0, "height": 10}}, "greater than 0"),
        ({"roi": {"x": 0, "y": 0, "width": 200, "height": 300}, "tiling": {}}, "smaller than one"),
        ({"roi": {"x": 0, "y": 0, "width": 100, "height": 50, "angle": 45}}, "left of or above"),
        ({"roi": {"x": 0, "y": 0, "width": 9, "height": 9, "colour": 1}}, "Extra inputs"),
    ],
)
def test_recipes_with_an_impossible_roi_or_tiling_are_refused(
    recipe: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        CameraRecipe.model_validate(recipe)


def test_a_tile_that_is_not_the_models_input_is_a_config_error_naming_the_key(
    model: ReverseDistillation,
) -> None:
    models = small_models(model, Metrics(CollectorRegistry()))
    models.check_recipe("line-3", TILED)
    models.check_recipe("other", CameraRecipe(model="elsewhere"))
    wrong = CameraRecipe(tiling=TilingConfig(tile=256))
    with pytest.raises(ConfigError, match=r"cameras\.line-3\.tiling\.tile is 256 but model 'm'"):
        models.check_recipe("line-3", wrong)


@pytest.mark.component  # runs the daemon and its HTTP server
def test_the_daemon_refuses_to_start_with_a_configured_tile_the_model_cannot_take(
    model: ReverseDistillation, tmp_path: Path
) -> None:
    ckpt = tmp_path / "m.safetensors"
    meta = CheckpointMeta(name="m", model=model.config, calibration=UNIT_CALIBRATION)
    save_checkpoint(ckpt, model, meta)
    config = InspectorConfig.model_validate(
        {
            "sources": [{"type": "directory", "path": str(tmp_path), "camera_id": "line-3"}],
            "model": {"checkpoint": str(ckpt), "device": "cpu", "warmup_batches": 0},
            "sinks": {"kafka": {"enabled": False}},
            "http": {"host": "127.0.0.1", "port": 0},
            "cameras": {"line-3": {"tiling": {"tile": 256}}},
        }
    )
    with pytest.raises(
        ConfigError, match=r"cameras\.line-3\.tiling\.tile is 256 .* set tile to 64"
    ):
        Daemon(config, registry=CollectorRegistry()).run()


@pytest.mark.component  # runs the daemon and its HTTP server
def test_put_recipe_with_a_tile_the_model_cannot_take_is_422(model: ReverseDistillation) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = small_models(model, metrics)
    pipeline = Pipeline([], BatcherConfig(), models, [], metrics)
    token = "t0ken-for-the-line-0123456789"
    server = serve_control(pipeline, models, registry, metrics, explicit_config({}), token)
    try:
        url = f"http://127.0.0.1:{server.port}/v1/cameras/line-3"
        auth = {"Authorization": f"Bearer {token}"}

        def put(body: dict[str, Any]) -> requests.Response:
            return requests.put(url, json=body, headers=auth, timeout=30)

        refused = put({"tiling": {"tile": 256}})
        assert refused.status_code == 422
        assert "cameras.line-3.tiling.tile is 256" in refused.json()["error"]
        assert "set tile to 64" in refused.json()["error"]
        assert put({"tiling": {"tile": 250}}).status_code == 422  # validated like the YAML
        changes = {"action": "set_recipe", "result": "rejected"}
        assert registry.get_sample_value("inspector_control_changes_total", changes) == 1
        taken = put(
            {
                "tiling": {"tile": 64, "overlap": 8},
                "roi": {"x": 0, "y": 0, "width": 64, "height": 64},
            }
        )
        assert taken.status_code == 200, taken.text
        assert pipeline.recipes.recipe("line-3").tiling == TilingConfig(tile=64, overlap=8)
    finally:
        server.stop()


# --- the pipeline ----------------------------------------------------------------------------


def _run(pipeline: Pipeline) -> None:
    pipeline.start()
    wait_until(lambda: pipeline.finished, 60, "the pipeline to finish")
    pipeline.close()


def _line(model: ReverseDistillation, recipes: Recipes | None, frames: list[Any]) -> FakeSink:
    metrics = Metrics(CollectorRegistry())
    sink = FakeSink()
    batcher = BatcherConfig(max_batch_size=4, max_wait_ms=5)
    pipeline = Pipeline(
        [FakeSource(frames)],
        batcher,
        small_models(model, metrics),
        [sink],
        metrics,
        recipes=recipes,
    )
    _run(pipeline)
    return sink


def test_cameras_without_roi_or_tiling_keep_the_plain_path(model: ReverseDistillation) -> None:
    images = _images(*[(120, 160)] * 6)

    def frames(cameras: list[str]) -> list[Any]:
        return [
            make_frame(img, f"frame-{i}", c)
            for i, (img, c) in enumerate(zip(images, cameras, strict=True))
        ]

    mixed = ["plain", "tiled", "plain", "cropped", "tiled", "plain"]
    recipes = Recipes(
        {"tiled": TILED, "cropped": CameraRecipe(roi=RoiConfig(x=10, y=10, width=100, height=64))}
    )
    # Routing: the plain frames of a mixed batch are the group a batch of them alone makes,
    # so the worker runs exactly what it ran before (bit for bit, batch for batch).
    models = small_models(model, Metrics(CollectorRegistry()))
    batch = frames(mixed)
    groups, failed = ModelRouter(models, recipes).route(batch)
    alone, _ = ModelRouter(models, Recipes({})).route([batch[0], batch[2], batch[5]])
    assert not failed and len(groups) == 2 and len(alone) == 1
    assert groups[0].views is None and alone[0].views is None
    assert groups[0].frames == alone[0].frames
    assert groups[0].postprocessors == alone[0].postprocessors
    assert [f.meta.camera_id for f in groups[1].frames] == ["tiled", "cropped", "tiled"]

    # Through the pipeline (batches as they come): plain frames score as without recipes.
    with_tiling = _line(model, recipes, frames(mixed))
    without = _line(model, None, frames(["plain"] * 6))
    plain = {r.message.frame_id: r.message for r in without.results}
    assert len(with_tiling.results) == 6 and not with_tiling.dead_letters
    for result in with_tiling.results:
        message = result.message
        assert message.image_size == (120, 160)  # regions are reported on the whole frame
        reference = plain[message.frame_id].raw_score
        if message.camera_id == "plain":
            # Only the batch's size may differ, which moves convolutions in the last bits.
            assert message.raw_score == pytest.approx(reference, rel=1e-5)
        else:
            assert message.raw_score != pytest.approx(reference, rel=1e-3)


def test_frames_their_roi_or_tiles_do_not_fit_become_dead_letters(
    model: ReverseDistillation,
) -> None:
    big, small = _images((120, 160), (40, 300))
    acks: list[str] = []
    recipes = Recipes(
        {
            "roi": CameraRecipe(roi=RoiConfig(x=100, y=0, width=80, height=64)),
            "tiled": TILED,
        }
    )
    frames = [
        make_frame(big, "outside", "roi", acks),  # 100 + 80 > 160
        make_frame(small, "too-small", "tiled", acks),  # 40 px < one 64 px tile
        make_frame(big, "fine", "tiled", acks),
    ]
    sink = _line(model, recipes, frames)
    letters = {d.error_type: d for d in sink.dead_letters}
    assert set(letters) == {"roi_outside_frame", "tiling_mismatch"}
    assert letters["roi_outside_frame"].stage == "inference"
    assert "reaches outside the 120x160 px frame" in letters["roi_outside_frame"].reason
    assert "smaller than one 64 px tile" in letters["tiling_mismatch"].reason
    assert [r.message.frame_id for r in sink.results] == ["fine"]
    assert sorted(acks) == ["fine", "outside", "too-small"]  # every frame answered
