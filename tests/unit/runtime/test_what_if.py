"""Threshold what-if: the answer matches a brute-force recount over the retained frames."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from results_helpers import RunningDaemon, daemon_config, frames_folder, start_daemon
from results_helpers import wait_for as wait

from inspector.checkpoint import LoadedCheckpoint
from inspector.runtime.control.what_if import what_if
from inspector.runtime.retention.reader import ScoredRow
from inspector.runtime.retention.records import MAX_LIST_LIMIT
from inspector.tools.synth import SynthSummary

CAMERA = "cam-what-if"
DEFECTS = ("defect", "missed_defect")


def _recount(rows: Sequence[Any], threshold: float, rate: float) -> dict[str, Any]:
    """Each figure by its definition, one comprehension each (rows: score, is_anomalous, label)."""
    above = [r for r in rows if r[0] > threshold]
    good_labels = [r for r in rows if r[2] == "false_alarm"]
    bad_labels = [r for r in rows if r[2] in DEFECTS]
    false_alarms = sum(r[2] == "false_alarm" for r in above)
    catches = sum(r[2] in DEFECTS for r in above)

    def weight(r: Any) -> float:
        return 1.0 if r[1] else (1 / rate if rate else 0.0)

    everything = sum(weight(r) for r in rows)
    return {
        "image_threshold": threshold,
        "flagged": len(above),
        "false_alarms": false_alarms,
        "catches": catches,
        "misses": sum(r[0] <= threshold for r in bad_labels),
        "unlabelled_flagged": sum(r[2] is None for r in above),
        "false_alarm_rate": false_alarms / len(good_labels) if good_labels else None,
        "catch_rate": catches / len(bad_labels) if bad_labels else None,
        "estimated_flag_rate": (
            sum(weight(r) for r in above) / everything if rate and everything else None
        ),
    }


_rows = st.lists(
    st.tuples(
        st.floats(0, 1),
        st.floats(0, 1),
        st.booleans(),
        st.sampled_from([None, "false_alarm", "defect", "missed_defect"]),
    ),
    min_size=1,
    max_size=60,
)


@given(rows=_rows, proposed=st.floats(0, 1), rate=st.sampled_from([0.0, 0.01, 0.5, 1.0]))
def test_both_outcomes_match_the_recount(
    rows: list[tuple[float, float, bool, str | None]], proposed: float, rate: float
) -> None:
    scored = [
        ScoredRow(score, threshold, flagged, label) for score, threshold, flagged, label in rows
    ]
    answer = what_if("cam", scored, proposed, rate).model_dump()
    plain = [(score, flagged, label) for score, _, flagged, label in rows]
    # The current threshold is the one the newest frame (the first row) was judged at.
    assert answer["current"] == pytest.approx(_recount(plain, rows[0][1], rate))
    assert answer["proposed"] == pytest.approx(_recount(plain, proposed, rate))
    assert answer["frames"] == len(rows)
    assert answer["labelled_false_alarms"] == sum(r[3] == "false_alarm" for r in rows)
    assert answer["labelled_defects"] == sum(r[3] in DEFECTS for r in rows)


@pytest.fixture(scope="module")
def line(
    checkpoint: LoadedCheckpoint, synth_data: SynthSummary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("what-if")
    frames = frames_folder(synth_data.root, root / "frames", per_class=4)
    total = len(list(frames.iterdir()))
    source = {"type": "directory", "path": str(frames), "camera_id": CAMERA}
    # Every frame retained, so the test knows when retention is done (other rates: above).
    config = daemon_config(checkpoint.path, [source], root / "retained", good_sample_rate=1.0)
    running = start_daemon(config)
    try:
        # Every frame inspected, and what retention keeps of them written and listed.
        wait(lambda: _settled(running, total), what="the source's frames inspected and retained")
        yield running
    finally:
        running.stop()


def _settled(line: RunningDaemon, total: int) -> bool:
    return line.retention.store.count() == total == len(_retained(line))


def _retained(line: RunningDaemon) -> list[dict[str, Any]]:
    response = line.get(f"/v1/results?limit={MAX_LIST_LIMIT}&camera={CAMERA}")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.mark.component
def test_the_daemon_answers_what_its_retained_frames_recount(line: RunningDaemon) -> None:
    items = _retained(line)
    flagged = [i for i in items if i["is_anomalous"]]
    good = [i for i in items if not i["is_anomalous"]]
    assert len(flagged) >= 2 and good, "the line needs flagged and good retained frames"
    for item, label in (
        (flagged[0], "false_alarm"),
        (flagged[1], "defect"),
        (good[0], "missed_defect"),
    ):
        path = f"/v1/results/{quote(item['frame_id'], safe='')}/label"
        assert line.post(path, json={"label": label}).status_code == 200
    items = _retained(line)  # newest first, as the what-if reads them
    rows = [(i["score"], i["is_anomalous"], i["label"]) for i in items]
    current = items[0]["threshold"]
    for proposed in (0.0, 0.3, current, 0.55, 0.8, 1.0):
        response = line.get(f"/v1/cameras/{CAMERA}/what-if?image_threshold={proposed}")
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["frames"] == len(items)
        assert answer["good_sample_rate"] == 1.0
        assert answer["current"] == pytest.approx(_recount(rows, current, 1.0))
        assert answer["proposed"] == pytest.approx(_recount(rows, proposed, 1.0))
    few = line.get(f"/v1/cameras/{CAMERA}/what-if?image_threshold=0.5&limit=2").json()
    assert few["frames"] == 2


@pytest.mark.component
def test_bad_queries_name_the_field_and_unknown_cameras_are_404(line: RunningDaemon) -> None:
    base = f"/v1/cameras/{CAMERA}/what-if"
    for query in ("", "?image_threshold=NaN", "?image_threshold=1.5", "?image_threshold=x"):
        response = line.get(base + query)
        assert response.status_code == 422, (query, response.text)
        assert "image_threshold" in response.text
    response = line.get(base + "?image_threshold=0.5&limit=0")
    assert response.status_code == 422 and "limit" in response.text
    response = line.get("/v1/cameras/nobody/what-if?image_threshold=0.5")
    assert response.status_code == 404 and "no retained frames" in response.text
