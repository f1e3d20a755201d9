"""What the daemon keeps of its shadows: promotion evidence from labels, the disagreements page.

A real retention sink holds result messages with their ``shadow`` block; the promotion's
labelled evidence and the console's disagreements are read back from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from fakes import small_models
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from retention_helpers import SinkMaker, inspection

from inspector.messages import ShadowVerdict
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.control.api import build_app
from inspector.runtime.control.api_results import ResultsAccess
from inspector.runtime.control.console.disagreements import disagreements
from inspector.runtime.control.errors import NoShadowError, UnknownCameraError
from inspector.runtime.control.promotion import ShadowControl
from inspector.runtime.control.state import RuntimeState, load_state, save_state
from inspector.runtime.metrics import Metrics
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.records import Inspection
from inspector.runtime.retention.reader import RetentionIndex
from inspector.runtime.shadow import ShadowBook

#: Frame id -> (served flags it, shadow flags it, label).
FRAMES = {
    "f1": (True, True, "defect"),  # both catch it
    "f2": (False, True, "missed_defect"),  # the shadow catches what the served missed
    "f3": (True, False, "false_alarm"),  # a false alarm of the served model only
    "f4": (False, True, "false_alarm"),  # a false alarm of the shadow only
    "f5": (False, False, None),  # agreed, unlabelled
    "f6": (True, None, "defect"),  # the shadow was skipped: no block
}


def _shadowed(frame_id: str, served: bool, shadow: bool | None) -> Inspection:
    item = inspection(frame_id, anomalous=served)
    verdict = None
    if shadow is not None:
        verdict = ShadowVerdict(model="eager", score=0.9 if shadow else 0.1, is_anomalous=shadow)
    message = item.message.model_copy(update={"shadow": verdict})
    return dataclasses.replace(item, message=message)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RetentionIndex]:
    maker = SinkMaker(tmp_path)
    sink, _ = maker(good_sample_rate=1.0)
    try:
        for frame_id, (served, shadow, label) in FRAMES.items():
            sink.write(_shadowed(frame_id, served, shadow))
            if label is not None:
                sink.store.label(frame_id, label)
        yield sink.store
    finally:
        maker.close_all()


def test_a_promotion_reports_what_the_labels_say_of_each_model(index: RetentionIndex) -> None:
    torch.manual_seed(0)
    net = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()
    metrics = Metrics(CollectorRegistry())
    models = small_models(net, metrics, name="m")  # the name make_result's messages carry
    models.add(dataclasses.replace(small_models(net, metrics, name="eager").default))
    recipes = Recipes(
        {"cam": CameraRecipe(model="m", shadow_model="eager"), "other": CameraRecipe()}
    )
    book = ShadowBook(metrics, wall_clock=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    control = ShadowControl(models, recipes, book, lambda: index)
    with pytest.raises(UnknownCameraError):
        control.swap("nobody", "tester", rollback=False)
    with pytest.raises(NoShadowError):
        control.swap("other", "tester", rollback=False)
    with pytest.raises(NoShadowError):  # nothing promoted yet
        control.swap("cam", "tester", rollback=True)
    done = control.swap("cam", "tester", rollback=False)
    assert (done.served, done.shadow) == ("eager", "m")
    labelled = done.labelled
    assert labelled is not None
    assert (labelled.frames, labelled.good, labelled.defective) == (4, 2, 2)
    assert (labelled.served_catches, labelled.shadow_catches) == (1, 2)
    assert (labelled.served_false_alarms, labelled.shadow_false_alarms) == (1, 1)
    assert recipes.recipe("cam") == CameraRecipe(model="eager", shadow_model="m")
    assert control.promoted == {"cam"}
    back = control.swap("cam", "tester", rollback=True)
    assert (back.served, back.shadow) == ("m", "eager") and control.promoted == set()
    assert back.labelled is not None and back.labelled.frames == 0  # none since the swap


def test_the_disagreements_page_lists_the_retained_frames_judged_otherwise(
    index: RetentionIndex,
) -> None:
    found = disagreements(index, None, 10)
    assert [d.frame_id for d in found] == ["f4", "f3", "f2"]  # newest first
    assert [d.label for d in found] == ["false_alarm", "false_alarm", "missed_defect"]
    assert disagreements(index, "cam", 1)[0].frame_id == "f4"
    assert disagreements(index, "elsewhere", 10) == []
    metrics = Metrics(CollectorRegistry())
    app = build_app(metrics.registry, lambda: [], metrics, results=ResultsAccess(lambda: index))
    with TestClient(app) as client:
        page = client.get("/disagreements")
        assert page.status_code == 200 and "/console/static/disagreements.js" in page.text
        assert "no overlay of its own" in page.text
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        script = client.get("/console/static/disagreements.js")
        assert script.status_code == 200 and "innerHTML" not in script.text
        data = client.get("/v1/console/disagreements", params={"limit": 2}).json()
        assert [d["frame_id"] for d in data] == ["f4", "f3"]
        assert data[0]["shadow_model"] == "eager" and data[0]["shadow_anomalous"] is True
        assert client.get("/v1/console/disagreements", params={"limit": 0}).status_code == 422


def test_a_promotion_saved_in_the_state_file_can_be_rolled_back_after_a_restart(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    net = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()
    metrics = Metrics(CollectorRegistry())
    models = small_models(net, metrics, name="m")
    models.add(dataclasses.replace(small_models(net, metrics, name="eager").default))
    promoted = CameraRecipe(model="eager", shadow_model="m", shadow_image_threshold=0.3)
    path = tmp_path / "state.json"
    save_state(path, RuntimeState(cameras={"cam": promoted}, promoted=("cam",)))
    restored = load_state(path)
    assert restored is not None and restored.promoted == ("cam",)
    recipes = Recipes(dict(restored.cameras))
    control = ShadowControl(models, recipes, ShadowBook(metrics), lambda: None, restored.promoted)
    back = control.swap("cam", "tester", rollback=True)
    assert back.recipe == CameraRecipe(model="m", shadow_model="eager", image_threshold=0.3)
    assert back.labelled is None  # retention off
    # A file of before the field still loads: nothing promoted.
    path.write_text('{"version": 1, "cameras": {"cam": {"model": "m"}}}')
    old = load_state(path)
    assert old is not None and old.promoted == ()
