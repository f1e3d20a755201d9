from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

import inspector
from inspector.messages import Latency, ModelRef, ResultMessage, ThresholdInfo, result_json_schema

PUBLISHED = Path(inspector.__file__).parent / "schemas" / "result.v1.json"


def _message(**overrides: object) -> ResultMessage:
    fields: dict[str, object] = {
        "frame_id": "f",
        "camera_id": "c",
        "processed_at": "2026-01-01T00:00:00+00:00",
        "model": ModelRef(name="m", backbone="resnet18", checkpoint_sha256="0" * 64),
        "score": 0.7,
        "raw_score": 0.3,
        "is_anomalous": True,
        "threshold": ThresholdInfo(image=0.5, pixel=0.5, source="checkpoint"),
        "defects": [],
        "mask": None,
        "image_size": (10, 20),
        "latency_ms": Latency(),
    }
    fields.update(overrides)
    return ResultMessage.model_validate(fields)


def test_published_schema_is_the_generated_one() -> None:
    # The file in the repo is what subscribers read; regenerate with `inspector schema`.
    assert json.loads(PUBLISHED.read_text()) == result_json_schema()


def test_message_json_uses_public_names_and_validates() -> None:
    data = json.loads(_message().to_json())
    assert data["schema"] == "inspector.result/v1" and "schema_" not in data
    jsonschema.validate(data, result_json_schema())


def test_out_of_range_score_is_rejected() -> None:
    with pytest.raises(ValidationError):
        _message(score=1.5)
    bad = json.loads(_message().to_json())
    bad["threshold"]["source"] = "guess"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, result_json_schema())


def test_readers_ignore_fields_added_by_later_versions() -> None:
    # The README tells subscribers to ignore unknown fields: our own readers (the demo's live
    # view) must too, and the published schema must not forbid them.
    data = json.loads(_message().to_json())
    data["late"] = True
    data["model"]["revision"] = 7
    data["defects"] = [
        {
            "bbox": [1, 2, 3, 4],
            "area_px": 5,
            "max_score": 0.9,
            "mean_score": 0.6,
            "centroid": [2.0, 3.0],
            "class": "scratch",
        }
    ]
    message = ResultMessage.from_json(json.dumps(data))
    assert message.frame_id == "f" and message.defects[0].area_px == 5
    jsonschema.validate(data, result_json_schema())


@pytest.mark.parametrize(
    ("captured_at", "processed_at", "expected"),
    [
        ("2025-01-01T00:00:00+00:00", "2025-01-01T00:00:01.250+00:00", 1250.0),
        ("2025-01-01T00:00:00Z", "2025-01-01T01:00:00.5+01:00", 500.0),  # zones differ
        ("2025-01-01T00:00:00", "2025-01-01T00:00:00.1+00:00", 100.0),  # no zone: UTC
        (None, "2025-01-01T00:00:00+00:00", None),
        ("not a time", "2025-01-01T00:00:00+00:00", None),
    ],
)
def test_capture_to_verdict_is_processed_at_minus_captured_at(
    captured_at: str | None, processed_at: str, expected: float | None
) -> None:
    got = _message(captured_at=captured_at, processed_at=processed_at).capture_to_verdict_ms()
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_part_id_is_carried_and_absent_when_none() -> None:
    # Absent (not null) without a part id: readers of messages from before the field see what
    # they saw; with one, it is in the JSON and valid against the published schema.
    assert "part_id" not in json.loads(_message().to_json())
    data = json.loads(_message(part_id="SN/0042").to_json())
    assert data["part_id"] == "SN/0042"
    jsonschema.validate(data, result_json_schema())
    assert ResultMessage.from_json(json.dumps(data)).part_id == "SN/0042"
