from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np

from inspector.checkpoint import LoadedCheckpoint
from inspector.messages import result_json_schema
from inspector.ml.predict import predict


def test_predict_folder_writes_valid_results_maps_and_overlays(
    checkpoint: LoadedCheckpoint, data_root: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "in" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"definitely not an image")
    summary = predict(checkpoint, [data_root / "test", bad], tmp_path / "out", save_maps=True)
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert summary.n_images == len(lines) == 12 + 4 * 5
    schema = result_json_schema()
    results = [json.loads(line) for line in lines]
    for result in results:
        jsonschema.validate(result, schema)
        assert result["model"]["checkpoint_sha256"] == checkpoint.sha256
    defective = [r for r in results if "/good/" not in r["frame_id"]]
    good = [r for r in results if "/good/" in r["frame_id"]]
    assert np.mean([r["score"] for r in defective]) > np.mean([r["score"] for r in good])
    errors = (tmp_path / "out" / "errors.jsonl").read_text().splitlines()
    assert summary.n_failed == 1 and "broken.png" in errors[0]
    maps = sorted((tmp_path / "out" / "maps").glob("*.npy"))
    assert len(maps) == summary.n_images  # same stems in different folders don't collide
    first = np.load(maps[0])
    assert first.dtype == np.float32 and first.shape == checkpoint.meta.model.image_size
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == summary.n_images


def test_saved_map_is_the_raw_model_map(
    checkpoint: LoadedCheckpoint, data_root: Path, tmp_path: Path
) -> None:
    image = sorted((data_root / "test" / "crack").iterdir())[0]
    predict(checkpoint, [image], tmp_path, save_maps=True, overlays=False)
    saved = np.load(tmp_path / "maps" / f"{image.stem}.npy")
    result = json.loads((tmp_path / "results.jsonl").read_text())
    assert result["raw_score"] == float(saved.max())
