"""Camera recipes: which results are late, from the camera's deadline and the capture time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from inspector.runtime.config import InspectorConfig, explicit_config
from inspector.runtime.recipes import CameraRecipe, Recipes

CAPTURED = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)


def _deadlines(now_ms_after_capture: float, **recipes: CameraRecipe) -> Recipes:
    now = CAPTURED.timestamp() + now_ms_after_capture / 1000
    return Recipes(recipes, wall_clock=lambda: now)


@pytest.mark.parametrize(("age_ms", "late"), [(0, False), (250, False), (250.5, True), (-5, False)])
def test_late_is_decided_against_the_camera_deadline(age_ms: float, late: bool) -> None:
    deadlines = _deadlines(age_ms, line1=CameraRecipe(deadline_ms=250))
    assert deadlines.late("line1", CAPTURED.isoformat()) is late


def test_the_wildcard_recipe_covers_cameras_without_their_own() -> None:
    recipes = {"*": CameraRecipe(deadline_ms=100), "slow": CameraRecipe(deadline_ms=1000)}
    deadlines = Recipes(recipes, wall_clock=lambda: CAPTURED.timestamp() + 0.5)
    assert deadlines.late("any", CAPTURED.isoformat()) is True
    assert deadlines.late("slow", CAPTURED.isoformat()) is False
    assert deadlines.deadline_ms("any") == 100


def test_lateness_is_unknown_without_deadline_or_capture_time() -> None:
    deadlines = _deadlines(10_000, line1=CameraRecipe(deadline_ms=100), free=CameraRecipe())
    assert deadlines.late("other", CAPTURED.isoformat()) is None  # no recipe, no wildcard
    assert deadlines.late("free", CAPTURED.isoformat()) is None  # a recipe without deadline
    assert deadlines.late("line1", None) is None
    assert deadlines.late("line1", "yesterday") is None  # never fails the frame


def test_a_capture_time_without_zone_is_utc_and_z_is_accepted() -> None:
    deadlines = _deadlines(150, line1=CameraRecipe(deadline_ms=100))
    assert deadlines.late("line1", "2026-11-30T08:00:00") is True
    assert deadlines.late("line1", "2026-11-30T08:00:00Z") is True
    assert deadlines.late("line1", "2026-11-30T09:00:00+01:00") is True
    assert deadlines.late("line1", "2026-11-30T08:00:00.100+00:00") is False


def test_cameras_section_from_yaml_values_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = explicit_config({"cameras": {"line1": {"deadline_ms": 400}, "*": {}}})
    assert config.cameras["line1"].deadline_ms == 400
    assert config.cameras["*"].deadline_ms is None
    monkeypatch.setenv("INSPECTOR_CAMERAS__LINE2__DEADLINE_MS", "900")
    assert InspectorConfig().cameras["line2"].deadline_ms == 900
    with pytest.raises(ValidationError, match=r"cameras\.line1\.deadline_ms"):
        explicit_config({"cameras": {"line1": {"deadline_ms": 0}}})
    with pytest.raises(ValidationError, match=r"cameras\.line1\.deadline"):
        explicit_config({"cameras": {"line1": {"deadline": 5}}})
