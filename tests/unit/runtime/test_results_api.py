"""The results API on a real daemon: listing, labels and images of retained frames.

One daemon for the module (the session's trained model, a folder of good and defective frames,
retention on with every frame kept), real HTTP requests. Frames whose ids a folder cannot
produce (``line1/cam2/000042``, ``../../etc/passwd``) are retained through the daemon's own
retention sink.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from results_helpers import ADMIN, RunningDaemon, daemon_config, frames_folder, start_daemon
from results_helpers import wait_for as wait
from retention_helpers import JPEG_MAGIC, PNG_MAGIC, inspection

from inspector.checkpoint import LoadedCheckpoint
from inspector.runtime.retention.records import MAX_LIST_LIMIT
from inspector.tools.synth import SynthSummary

CAMERA = "cam-a"
#: A real daemon (a server, the session's trained model); the browser test starts chromium.
pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def line(
    checkpoint: LoadedCheckpoint, synth_data: SynthSummary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("results-api")
    frames = frames_folder(synth_data.root, root / "frames")
    total = len(list(frames.iterdir()))
    source = {"type": "directory", "path": str(frames), "camera_id": CAMERA}
    running = start_daemon(daemon_config(checkpoint.path, [source], root / "retained"))
    try:
        # good_sample_rate 1: every frame is retained once its result is delivered.
        wait(lambda: running.retention.store.count() == total, what="every frame retained")
        yield running
    finally:
        running.stop()


def _all(line: RunningDaemon, query: str = "") -> list[dict[str, object]]:
    response = line.get(f"/v1/results?limit={MAX_LIST_LIMIT}{query}")
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


def _flagged(line: RunningDaemon) -> list[str]:
    return [str(i["frame_id"]) for i in _all(line, "&flagged=true&camera=" + CAMERA)]


def _detail(line: RunningDaemon, frame_id: str) -> dict[str, object]:
    response = line.get(f"/v1/results/{quote(frame_id, safe='')}/detail")
    assert response.status_code == 200, response.text
    frame: dict[str, object] = response.json()["frame"]
    return frame


def _raw_get(line: RunningDaemon, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client resolving dot segments or re-encoding)."""
    assert line.daemon.server is not None
    connection = http.client.HTTPConnection("127.0.0.1", line.daemon.server.port, timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_listing_filters_pages_and_polls_newest_first(line: RunningDaemon) -> None:
    everything = _all(line)
    seqs = [int(str(i["seq"])) for i in everything]
    assert seqs == sorted(seqs, reverse=True)
    flagged = _all(line, "&flagged=true")
    good = _all(line, "&flagged=false")
    assert flagged and good, "the trained model flags the defects and passes good frames"
    assert all(i["is_anomalous"] for i in flagged) and not any(i["is_anomalous"] for i in good)
    anomalies = line.registry.get_sample_value("inspector_anomalies_total", {"camera": CAMERA})
    assert len([i for i in flagged if i["camera_id"] == CAMERA]) == anomalies
    assert {str(i["frame_id"]) for i in flagged if i["camera_id"] == CAMERA} >= {
        str(i["frame_id"]) for i in flagged if str(i["frame_id"]).startswith("crack_")
    }
    assert all(set(i["views"]) == {"frame", "overlay", "mask"} for i in flagged)  # type: ignore[arg-type]

    # Pages of two, following next_before, give the whole list once.
    paged: list[object] = []
    before = ""
    while True:
        page = line.get(f"/v1/results?limit=2{before}").json()
        paged += [i["frame_id"] for i in page["items"]]
        if page["next_before"] is None:
            break
        before = f"&before={page['next_before']}"
    assert paged == [i["frame_id"] for i in everything]
    # after: only what was retained after a seq (what the console's live view polls with).
    newer = line.get(f"/v1/results?after={seqs[2]}").json()
    assert [i["seq"] for i in newer["items"]] == seqs[:2] and newer["next_before"] is None
    assert _all(line, "&camera=nobody") == []

    for query, field in (
        ("limit=0", "limit"),
        (f"limit={MAX_LIST_LIMIT + 1}", "limit"),
        ("before=-1", "before"),
        ("camera=a%2Fb", "camera"),
        ("camera=a%0Ab", "camera"),
        ("label=maybe", "label"),
        ("flagged=perhaps", "flagged"),
    ):
        response = line.get(f"/v1/results?{query}")
        assert response.status_code == 422, query
        assert response.json()["errors"][0]["loc"] == ["query", field], query


def test_a_label_needs_the_token_is_stored_listed_and_counted(
    line: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    frame_id = _flagged(line)[0]
    path = f"/v1/results/{quote(frame_id, safe='')}/label"
    counted = {"camera": CAMERA, "label": "defect"}
    before = line.registry.get_sample_value("inspector_labels_total", counted) or 0.0
    for token in (None, "wrong-token-wrong-token"):
        refused = line.post(path, token=token, json={"label": "defect"})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert _detail(line, frame_id)["label"] is None
    assert ADMIN not in caplog.text and "wrong-token" not in caplog.text

    saved = line.post(path, json={"label": "defect", "kind": "crack", "note": "left edge\nbad"})
    assert saved.status_code == 200, saved.text
    assert (saved.json()["label"], saved.json()["kind"]) == ("defect", "crack")
    shown = _detail(line, frame_id)
    assert (shown["label"], shown["kind"], shown["note"]) == ("defect", "crack", "left edge\nbad")
    assert frame_id in [i["frame_id"] for i in _all(line, "&label=defect")]
    assert frame_id not in [i["frame_id"] for i in _all(line, "&label=unlabelled")]
    assert line.registry.get_sample_value("inspector_labels_total", counted) == before + 1

    # A second label replaces the first (an operator's correction).
    again = line.post(path, json={"label": "false_alarm"})
    assert again.status_code == 200 and again.json()["kind"] is None
    assert _detail(line, frame_id)["label"] == "false_alarm"


def _labels_of(line: RunningDaemon, camera: str) -> dict[str, int]:
    """The console's label counts of a camera's tile (read from the retention index)."""
    tiles = line.get("/v1/console/overview").json()["tiles"]
    (tile,) = [t for t in tiles if t["camera"] == camera]
    counts: dict[str, int] = tile["labels"]
    return counts


def test_a_label_can_be_removed_once_and_then_nothing_changes(
    line: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "inspector")
    frame_id = _flagged(line)[1]
    path = f"/v1/results/{quote(frame_id, safe='')}/label"
    saved = line.post(path, json={"label": "defect", "kind": "crack", "note": "slip"})
    assert saved.status_code == 200, saved.text
    labelled = _labels_of(line, CAMERA)
    cleared = {"camera": CAMERA}
    before = line.registry.get_sample_value("inspector_label_clears_total", cleared) or 0.0
    for token in (None, "wrong-token-wrong-token"):
        refused = line.delete(path, token=token)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert _detail(line, frame_id)["label"] == "defect"

    removed = line.delete(path)
    assert removed.status_code == 200, removed.text
    body = removed.json()
    assert body["frame_id"] == frame_id
    assert (body["label"], body["kind"], body["note"], body["labelled_at"]) == (None,) * 4
    shown = _detail(line, frame_id)
    assert (shown["label"], shown["kind"], shown["note"]) == (None, None, None)
    assert frame_id in [i["frame_id"] for i in _all(line, "&label=unlabelled")]
    assert frame_id not in [i["frame_id"] for i in _all(line, "&label=defect")]
    assert _labels_of(line, CAMERA) == {**labelled, "defect": labelled["defect"] - 1}
    assert line.registry.get_sample_value("inspector_label_clears_total", cleared) == before + 1
    assert "removed label defect" in caplog.text and ADMIN not in caplog.text

    # Again: the frame as it is, nothing counted.
    again = line.delete(path)
    assert again.status_code == 200 and again.json() == body
    assert line.registry.get_sample_value("inspector_label_clears_total", cleared) == before + 1
    assert _labels_of(line, CAMERA) == {**labelled, "defect": labelled["defect"] - 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"label": "bogus"}', "label"),
        ('{"kind": "scratch"}', "label"),
        ('{"label": "defect", "kind": "scr\\natch"}', "kind"),
        ('{"label": "defect", "kind": ""}', "kind"),
        ('{"label": "defect", "kind": "' + "k" * 65 + '"}', "kind"),
        ('{"label": "defect", "note": "a\\u0000b"}', "note"),
        ('{"label": "defect", "note": "evil\\u202etxt"}', "note"),
        ('{"label": "defect", "by": "mallory"}', "by"),
        ('{"label": NaN}', None),
        ("not json at all", None),
    ],
)
def test_a_bad_label_body_is_a_422_naming_the_field_and_changes_nothing(
    line: RunningDaemon, body: str, field: str | None
) -> None:
    frame_id = _flagged(line)[-1]
    path = f"/v1/results/{quote(frame_id, safe='')}/label"
    response = line.post(path, data=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    if field is not None:
        assert response.json()["errors"][0]["loc"][-1] == field
    assert "\x00" not in response.text and "\u202e" not in response.text
    assert _detail(line, frame_id)["label"] is None


def test_a_kind_on_a_false_alarm_is_refused_by_the_store_rule(line: RunningDaemon) -> None:
    frame_id = _flagged(line)[-1]
    path = f"/v1/results/{quote(frame_id, safe='')}/label"
    response = line.post(path, json={"label": "false_alarm", "kind": "scratch"})
    assert response.status_code == 422 and "kind" in response.json()["error"]
    assert _detail(line, frame_id)["label"] is None


def test_an_oversized_body_is_a_413_before_it_is_read(line: RunningDaemon) -> None:
    frame_id = _flagged(line)[-1]
    path = f"/v1/results/{quote(frame_id, safe='')}/label"
    big = b'{"label": "defect", "note": "' + b"x" * 9000 + b'"}'
    declared = line.post(path, data=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "8192" in declared.json()["error"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the bound counts what arrives
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    streamed = line.post(path, data=chunked(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert _detail(line, frame_id)["label"] is None


def test_unknown_frames_are_404_on_every_route(line: RunningDaemon) -> None:
    for response in (
        line.get("/v1/results/no-such-frame/detail"),
        line.get("/v1/results/no-such-frame/image?view=overlay"),
        line.post("/v1/results/no-such-frame/label", json={"label": "defect"}),
        line.delete("/v1/results/no-such-frame/label"),
    ):
        assert response.status_code == 404, response.text
        assert "no-such-frame" in response.json()["error"]


def test_pictures_of_a_frame_by_view(line: RunningDaemon) -> None:
    flagged = _flagged(line)[0]
    good = str(_all(line, "&flagged=false")[0]["frame_id"])
    # The overlay is a JPEG (a heat map over a photograph); frame (as generated) and mask PNGs.
    kinds = {"frame": ("image/png", PNG_MAGIC), "overlay": ("image/jpeg", JPEG_MAGIC)}
    for view in ("frame", "overlay", "mask"):
        response = line.get(f"/v1/results/{quote(flagged, safe='')}/image?view={view}")
        assert response.status_code == 200, (view, response.text)
        content_type, magic = kinds.get(view, ("image/png", PNG_MAGIC))
        assert response.headers["content-type"] == content_type
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in response.headers["content-security-policy"]
        assert response.content.startswith(magic)
        picture = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert picture is not None and picture.shape[:2] == (128, 128)
    mask = line.get(f"/v1/results/{quote(good, safe='')}/image?view=mask")
    assert mask.status_code == 404 and "mask" in mask.json()["error"]
    bad = line.get(f"/v1/results/{quote(flagged, safe='')}/image?view=../../etc/passwd")
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "view"]


def test_frame_ids_with_slashes_and_url_characters_are_addressed_encoded_or_raw(
    line: RunningDaemon,
) -> None:
    ids = ["line1/cam2/000042", "odd?id#with%chars&=", "ends/in/image", "ends/in/label", "a..b"]
    for frame_id in ids:
        line.retention.write(inspection(frame_id, camera_id=CAMERA))
    for frame_id in ids:
        encoded = quote(frame_id, safe="")
        assert _detail(line, frame_id)["frame_id"] == frame_id
        image = line.get(f"/v1/results/{encoded}/image?view=overlay")
        assert image.status_code == 200 and image.content.startswith(JPEG_MAGIC)
    # A literal "/" works as well: the last segment picks the route, the rest is the id.
    raw = line.get("/v1/results/line1/cam2/000042/detail")
    assert raw.status_code == 200 and raw.json()["frame"]["frame_id"] == "line1/cam2/000042"
    assert line.get("/v1/results/ends/in/image/detail").json()["frame"]["frame_id"] == (
        "ends/in/image"
    )
    labelled = line.post("/v1/results/ends/in/label/label", json={"label": "missed_defect"})
    assert labelled.status_code == 200 and labelled.json()["frame_id"] == "ends/in/label"
    assert _detail(line, "ends/in/image")["label"] is None


def test_path_like_ids_read_nothing_outside_the_retention_folder(
    line: RunningDaemon, tmp_path: Path
) -> None:
    folder = line.retention.path
    secret = folder.parent / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-NOT-A-FRAME")
    attempts = [
        "/v1/results/../secret.txt/image",
        "/v1/results/..%2Fsecret.txt/image",
        "/v1/results/..%2F..%2Fsecret.txt/image?view=frame",
        "/v1/results/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/image",
        "/v1/results/%2Fetc%2Fpasswd/image",
        "/v1/results/..%5C..%5Csecret.txt/image",
        "/v1/results/..%252F..%252Fsecret.txt/image",
        "/v1/results/a%00b/image",
        "/v1/results/a%0Ab/image",
        f"/v1/results/{quote(str(secret), safe='')}/image",
    ]
    for path in attempts:
        status, body = _raw_get(line, path)
        assert 400 <= status < 500, (path, status)
        assert b"TOP-SECRET" not in body and b"root:" not in body, path
    # A frame whose id *is* path-like is served from its own hashed file, nothing else.
    line.retention.write(inspection("../../etc/passwd", camera_id=CAMERA))
    status, body = _raw_get(line, "/v1/results/..%2F..%2Fetc%2Fpasswd/image?view=frame")
    assert status == 200 and body.startswith(PNG_MAGIC)
    stored = line.retention.store.image_path("../../etc/passwd", "frame")
    assert stored is not None and stored.is_relative_to(folder) and stored.read_bytes() == body


def test_hostile_paths_never_reach_the_log_raw(
    line: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "inspector")  # refusals are rate-limited to DEBUG after one
    for path in ("/v1/results/a%0Ainspector%20stopped/detail", "/v1/results/%1B%5B31m/detail"):
        status, _ = _raw_get(line, path)
        assert 400 <= status < 500
    # A refused write is logged with its path: escaped, one line.
    hostile = "/v1/results/%1B%5B31m%0Dforged/label"
    refused = line.post(hostile, token=None, json={"label": "defect"})
    assert refused.status_code == 401
    said = [r.getMessage() for r in caplog.records if r.name.startswith("inspector")]
    assert any("refused" in m for m in said)
    assert not any(ch in m for m in said for ch in "\x1b\r\n")
    assert requests.get(line.base + "/healthz", timeout=10).status_code == 200


def test_a_client_that_leaves_mid_picture_leaves_no_file_open(line: RunningDaemon) -> None:
    # Noise does not compress: megabytes, more than the socket buffers take at once, so the
    # server is still sending when the client goes.
    line.retention.write(inspection("big-frame", camera_id=CAMERA, size=(1500, 1500)))
    files = str(line.retention.path.resolve() / "files")

    def open_retained() -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith(files):
                    found.append(target)
        return found

    assert line.daemon.server is not None
    request = b"GET /v1/results/big-frame/image?view=frame HTTP/1.1\r\nHost: x\r\n\r\n"
    for read_first in (True, False, True, False):  # gone mid-answer, or before it began
        with socket.create_connection(("127.0.0.1", line.daemon.server.port), timeout=30) as s:
            s.sendall(request)
            if read_first:
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
    wait(lambda: not open_retained(), timeout=30, what="the server to close the pictures")
    whole = line.get("/v1/results/big-frame/image?view=frame")
    assert whole.status_code == 200 and len(whole.content) > 2_000_000
    assert int(whole.headers["content-length"]) == len(whole.content)


def test_generated_requests_get_only_documented_answers(line: RunningDaemon) -> None:
    # Property-based, as for the control API: requests made from /v1/openapi.json for every
    # results operation, answers checked against it (status, body schema, content type).
    schema = schemathesis.openapi.from_dict(line.get("/v1/openapi.json").json())
    checks = [
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.response_schema_conformance,
        schemathesis.checks.content_type_conformance,
    ]
    answers: dict[str, set[int]] = {}
    for operation in schema.get_all_operations():
        op = operation.ok()
        if not op.path.startswith("/v1/results"):
            continue

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            response = case.call_and_validate(base_url=line.base, checks=checks)
            answers.setdefault(case.operation.label, set()).add(response.status_code)

        run()
    assert len(answers) == 5, answers
    assert answers["POST /v1/results/{frame_id}/label"] == {401}  # no token, no change
    assert answers["DELETE /v1/results/{frame_id}/label"] == {401}
    assert 200 in answers["GET /v1/results"]


def test_a_cursor_beyond_sqlite_integers_is_a_422_naming_it(line: RunningDaemon) -> None:
    # Found by the generated requests: 2**63 overflowed SQLite's INTEGER and answered 500.
    for name in ("before", "after"):
        response = line.get(f"/v1/results?{name}={2**63}")
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["query", name]
    assert line.get(f"/v1/results?before={2**63 - 1}").status_code == 200
