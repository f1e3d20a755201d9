"""Every float of every configuration model refuses NaN and the infinities.

The models are walked, not listed, so a float field added later is covered at once.
"""

from __future__ import annotations

import math
import types
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from inspector.runtime.config import InspectorConfig
from inspector.runtime.control.line import NewModel
from inspector.runtime.control.state import RuntimeState


def _leaves(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaves(get_args(annotation)[0])
    if origin in (Union, types.UnionType, tuple, list, dict):
        return [leaf for arg in get_args(annotation) if arg is not ... for leaf in _leaves(arg)]
    return [annotation]


def _float_fields(root: type[BaseModel]) -> list[tuple[type[BaseModel], str]]:
    """``(model, field)`` for every float field of ``root`` and the models inside it."""
    seen: set[type[BaseModel]] = set()
    found: list[tuple[type[BaseModel], str]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            leaves = _leaves(field.annotation)
            if float in leaves:
                found.append((model, name))
            todo += [t for t in leaves if isinstance(t, type) and issubclass(t, BaseModel)]
    return sorted(found, key=lambda pair: (pair[0].__name__, pair[1]))


FIELDS = sorted(
    {pair for root in (InspectorConfig, RuntimeState, NewModel) for pair in _float_fields(root)},
    key=lambda pair: (pair[0].__name__, pair[1]),
)


def test_the_walk_finds_the_floats_of_the_issue() -> None:
    names = {f"{model.__name__}.{field}" for model, field in FIELDS}
    assert {"CameraRecipe.image_threshold", "RoiConfig.angle", "CameraSourceConfig.fps"} <= names
    assert "DaemonConfig.drain_timeout_s" in names and len(names) >= 15


@pytest.mark.parametrize(("model", "field"), FIELDS, ids=[f"{m.__name__}.{f}" for m, f in FIELDS])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "NaN", "Infinity", "1e999"])
def test_non_finite_values_are_refused(model: type[BaseModel], field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate({field: value})
    assert any(
        e["loc"] == (field,) and e["type"] == "finite_number" for e in info.value.errors()
    ), info.value.errors()
