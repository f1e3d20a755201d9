"""Dead-letter ``error_type`` and ``stage`` are one enum; the README, schema and metrics follow it.

The values are a contract (DLQ headers, JSONL lines, metric labels, the README's table): these
tests fail when any of them drifts from :mod:`inspector.dead_letters`, or when a member is
declared that no code path produces.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from fakes import FakeSink, FakeSource, make_frame, small_models
from prometheus_client import CollectorRegistry

import inspector
from inspector.dead_letters import DEAD_LETTER_REFUSED, FAILED_LABELS, ErrorType, FailureStage
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import BatcherConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.records import DeadLetter, Frame, RawMessage
from inspector.runtime.routing import ModelRouter
from inspector.runtime.sinks.jsonl import dead_letter_record

PACKAGE = Path(inspector.__file__).parent
README = PACKAGE.parent / "README.md"
SCHEMA = PACKAGE / "schemas" / "dead_letter.v1.json"
ENUM_MODULE = PACKAGE / "dead_letters.py"
TABLE_HEADER = "| `error_type` | stage | what | do |"


def _readme_rows() -> list[list[str]]:
    """The cells of the README's dead-letter table, one list per row."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines.count(TABLE_HEADER) == 1, f"README: exactly one table headed {TABLE_HEADER}"
    start = lines.index(TABLE_HEADER) + 2  # past the header and the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _known_values(prop: str) -> list[str]:
    """The values a schema property's description lists after ``Known values:``."""
    description = json.loads(SCHEMA.read_text())["properties"][prop]["description"]
    match = re.search(r"Known values: ([a-z_, ]+)\.$", description)
    assert match, f"{SCHEMA.name}: {prop}'s description ends without 'Known values: a, b.'"
    return match.group(1).split(", ")


def _letter(kind: ErrorType, raw: RawMessage | None) -> DeadLetter:
    return DeadLetter("why", kind, kind.stage, "cam-1", raw, "2026-01-01T00:00:00+00:00")


def test_every_error_type_has_a_stage() -> None:
    # _STAGE_OF is a dict beside the enum: a member added without a stage fails here.
    assert {kind: kind.stage for kind in ErrorType}.keys() == set(ErrorType)
    assert all(isinstance(kind.stage, FailureStage) for kind in ErrorType)


def test_readme_table_is_the_enum_in_order_with_its_stages() -> None:
    rows = _readme_rows()
    documented = [(row[0], row[1]) for row in rows]
    expected = [(f"`{kind}`", str(kind.stage)) for kind in ErrorType]
    assert documented == expected
    assert all(len(row) == 4 and row[2] and row[3] for row in rows), "every row says what and do"


def test_schema_lists_the_enum_values() -> None:
    assert _known_values("error_type") == [str(kind) for kind in ErrorType]
    assert _known_values("stage") == [str(stage) for stage in FailureStage]


@pytest.mark.parametrize("kind", list(ErrorType))
def test_jsonl_dead_letters_validate_against_the_schema(kind: ErrorType) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    raw = RawMessage(b"\xff\xd8", b"cam-1", (), "inspector.frames", 2, 41)
    for letter in (_letter(kind, raw), _letter(kind, None)):
        # Through JSON, as the sink writes it: the enum members must come out as plain strings.
        line = json.loads(json.dumps(dead_letter_record(letter)))
        assert (line["error_type"], line["stage"]) == (kind.value, kind.stage.value)
        jsonschema.validate(line, schema, cls=jsonschema.Draft202012Validator)


def test_schema_rejects_a_line_without_its_kind() -> None:
    schema = json.loads(SCHEMA.read_text())
    line = dead_letter_record(_letter(ErrorType.EMPTY, None))
    del line["error_type"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(line, schema, cls=jsonschema.Draft202012Validator)


def test_every_member_has_a_docstring() -> None:
    # The operator's documentation of each value: the string right after its assignment.
    tree = ast.parse(ENUM_MODULE.read_text(encoding="utf-8"))
    documented: set[str] = set()
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for stmt, after in zip(cls.body, cls.body[1:], strict=False):
            if (
                isinstance(stmt, ast.Assign)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                documented |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
    members = {m.name for m in ErrorType} | {m.name for m in FailureStage}
    assert members - documented == set()


def _references(enum_name: str) -> set[str]:
    """Members of ``enum_name`` named as ``enum_name.MEMBER`` in the package's code."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path == ENUM_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == enum_name
            ):
                names.add(node.attr)
    return names


def test_every_member_is_produced_somewhere() -> None:
    # A member no code names is a promise in the README and schema that nothing keeps (or a
    # producer that went back to a bare string, which mypy would have refused).
    assert {m.name for m in ErrorType} - _references("ErrorType") == set()
    assert {m.name for m in FailureStage} - _references("FailureStage") == set()


def test_failure_metric_is_bounded_by_the_enum_and_starts_at_zero() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    expected = {(kind.stage.value, kind.value) for kind in ErrorType}
    expected.add((FailureStage.PUBLISH.value, DEAD_LETTER_REFUSED))
    assert {(str(s), r) for s, r in FAILED_LABELS} == expected
    assert len(FAILED_LABELS) == len(expected)  # no pair twice
    exported = {
        (sample.labels["stage"], sample.labels["reason"]): sample.value
        for family in registry.collect()
        if family.name == "inspector_frames_failed"
        for sample in family.samples
    }
    assert exported == dict.fromkeys(expected, 0.0)
    assert DEAD_LETTER_REFUSED not in {kind.value for kind in ErrorType}


# Real paths for the kinds no other test produces end to end (the others: corrupt_record in
# test_kafka_source_unit; empty, oversized, undecodable, invalid_header, malformed_record in
# test_kafka_records_total; too_large in test_directory; roi_outside_frame, tiling_mismatch in
# test_tiled_inspection; publish_refused in test_pipeline).


@pytest.fixture(scope="module")
def model() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()


def _frame(frame_id: str, camera: str, acks: list[str] | None = None) -> Frame:
    return make_frame(np.zeros((48, 80, 3), np.uint8), frame_id, camera, acks)


def test_a_recipe_naming_no_served_model_routes_to_unknown_model(
    model: ReverseDistillation,
) -> None:
    models = small_models(model, Metrics(CollectorRegistry()))
    recipes = Recipes({"cam": CameraRecipe(model="gone")})
    groups, failed = ModelRouter(models, recipes).route([_frame("f", "cam")])
    assert groups == [] and [u.kind for u in failed] == [ErrorType.UNKNOWN_MODEL]
    assert "gone" in str(failed[0].error)


def _broken(*args: object, **kwargs: object) -> object:
    raise RuntimeError("broken on purpose")


@pytest.mark.parametrize(
    ("broken", "kind"),
    [
        ("worker.score", ErrorType.INFERENCE_ERROR),
        ("_postprocess_one", ErrorType.POSTPROCESS_ERROR),
    ],
)
def test_failures_after_admission_are_dead_lettered_with_their_kind_and_counted(
    model: ReverseDistillation, broken: str, kind: ErrorType
) -> None:
    acks: list[str] = []
    registry, sink = CollectorRegistry(), FakeSink()
    metrics = Metrics(registry)
    frames = [_frame(f"f{i}", "cam", acks) for i in range(2)]
    batcher = BatcherConfig(max_batch_size=4, max_wait_ms=5, queue_size=8)
    pipeline = Pipeline(
        [FakeSource(frames)], batcher, small_models(model, metrics), [sink], metrics
    )
    owner, _, name = broken.rpartition(".")
    setattr(getattr(pipeline, owner) if owner else pipeline, name, _broken)
    pipeline.start()
    assert pipeline.wait_drained(60), f"still {pipeline.in_flight} in flight"
    pipeline.close()
    assert [(d.error_type, d.stage) for d in sink.dead_letters] == [(kind, kind.stage)] * 2
    assert not sink.results and sorted(acks) == ["f0", "f1"]
    labels = {"stage": kind.stage.value, "reason": kind.value}
    assert registry.get_sample_value("inspector_frames_failed_total", labels) == 2
