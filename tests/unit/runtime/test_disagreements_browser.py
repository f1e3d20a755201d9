"""The console's disagreements page in a real browser: Debian's chromium, driven by Playwright.

A real daemon: two looping folders of the synthetic line, the session's trained model serving,
and the same checkpoint loaded again as ``eager``, each camera's shadow with a deliberately
different image threshold: on ``cam-eager`` the served model passes every frame (its recipe's
threshold is 1.0) and the shadow flags every frame that scores above 0, on ``cam-lax`` the
served model keeps its threshold and the shadow flags none (so it disagrees on every frame the
served model flags). Retention keeps every frame, a read token guards reads. The page asks for
the token itself, then lists both kinds of disagreement: a row per frame with the frame loaded,
beside it the served overlay (loaded, where the served model flagged the frame: only then is a
map kept; a shadow never brings one back) or a note saying why there is none, and the two
verdicts beside them, as the API says.

A missing browser fails the test (``.ci/ensure-chromium`` installs it); it never skips. Every
wait is for a condition (locators and ``expect``), never a fixed sleep: the line runs on two
shared CPU cores. Screenshots are kept under the test's tmp dir; set
``INSPECTOR_DISAGREEMENTS_SCREENSHOT`` to a path to also save the page there (how
``docs/disagreements.png`` is made).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import give_read_token, record_page_errors
from results_helpers import READER, RunningDaemon, daemon_config, frames_folder, start_daemon
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.tools.synth import SynthSummary

#: Its shadow flags every frame: disagreements where the served model says good.
EAGER_CAMERA = "cam-eager"
#: Its shadow flags none: disagreements where the served model says anomalous.
LAX_CAMERA = "cam-lax"
SHADOW = "eager"
#: A real daemon (a server, the session's trained model); the test starts chromium.
pytestmark = pytest.mark.component


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "no chromium on PATH: run .ci/ensure-chromium (Debian's chromium package)",
            pytrace=False,
        )
    return found


def _folder(data_root: Path, folder: Path, camera: str) -> Path:
    """The line's good and defective frames, named after the camera (frame ids are names)."""
    frames = frames_folder(data_root, folder.with_name(folder.name + "-src"), per_class=2)
    folder.mkdir()
    for src in sorted(frames.iterdir()):
        shutil.copy(src, folder / f"{camera}-{src.name}")
    return folder


@pytest.fixture(scope="module")
def line(
    checkpoint: LoadedCheckpoint, synth_data: SynthSummary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("disagreements")
    sources = [
        {
            "type": "directory",
            "path": str(_folder(synth_data.root, root / camera, camera)),
            "camera_id": camera,
            "loop": True,
            # Slow enough that the shadow's turn mostly finds the inference thread idle.
            "fps": 2,
        }
        for camera in (EAGER_CAMERA, LAX_CAMERA)
    ]
    config = daemon_config(
        checkpoint.path,
        sources,
        root / "retained",
        read_token=READER,
        good_sample_rate=1.0,  # good frames are retained too: the eager shadow's disagreements
        models={SHADOW: str(checkpoint.path)},
        cameras={
            # Served: nothing passes 1.0; the shadow: any score over 0 (scores clip at 0).
            EAGER_CAMERA: {
                "image_threshold": 1.0,
                "shadow_model": SHADOW,
                "shadow_image_threshold": 0.0,
            },
            # Served: the model's threshold; the shadow: nothing passes 1.0.
            LAX_CAMERA: {"shadow_model": SHADOW, "shadow_image_threshold": 1.0},
        },
    )
    running = start_daemon(config)
    try:
        yield running
    finally:
        running.stop()


def _disagreements(line: RunningDaemon, camera: str | None = None) -> list[dict[str, Any]]:
    query = "limit=24" if camera is None else f"limit=100&camera={camera}"
    response = line.get(f"/v1/console/disagreements?{query}", token=READER)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def _both_kinds(line: RunningDaemon) -> bool:
    cameras = {d["camera_id"] for d in _disagreements(line)}
    return cameras == {EAGER_CAMERA, LAX_CAMERA}


def test_disagreements_show_both_verdicts_beside_the_frame_and_its_overlay(
    line: RunningDaemon, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    # Each look reads up to 500 retained result files: half a second apart, not ten a second.
    wait_until(
        lambda: _both_kinds(line),
        300,
        "disagreements of both cameras",
        step=lambda: time.sleep(0.5),
    )
    listed = {d["frame_id"]: d for d in _disagreements(line)}
    for d in listed.values():  # what the deliberately different thresholds make of each frame
        assert d["served_anomalous"] != d["shadow_anomalous"]
        assert d["shadow_model"] == SHADOW and d["served_model"] != SHADOW
        assert d["shadow_anomalous"] is (d["camera_id"] == EAGER_CAMERA)

    expect.set_options(timeout=60_000)  # waits, not timings: the line runs on two CPU cores
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
            record_page_errors(page, errors)

            # Opened directly, the page asks for the read token itself.
            page.goto(line.base + "/disagreements")
            give_read_token(page, READER)
            expect(page.locator("#token-panel")).to_be_hidden()

            rows = page.locator("#disagreements tbody tr")
            overlays = 0
            for camera in (EAGER_CAMERA, LAX_CAMERA):
                newest = page.locator(f'#disagreements tbody tr[data-camera="{camera}"]').first
                newest.wait_for()
                frame_id = newest.get_attribute("data-frame-id")
                assert frame_id is not None
                # Pinned to its frame: a later poll may put a newer row of the camera first.
                row = page.locator(f'#disagreements tbody tr[data-frame-id="{frame_id}"]')
                # The line keeps running: a row newer than the first look is asked for again
                # (among the camera's newest 100, which the page's last poll is well within).
                expected = listed.get(frame_id) or next(
                    d for d in _disagreements(line, camera) if d["frame_id"] == frame_id
                )
                served, shadow = (
                    row.locator('td[data-role="served"]'),
                    row.locator('td[data-role="shadow"]'),
                )
                served_says = "anomalous" if expected["served_anomalous"] else "good"
                shadow_says = "anomalous" if expected["shadow_anomalous"] else "good"
                assert served_says != shadow_says
                expect(served.locator("strong")).to_have_text(served_says)
                expect(shadow.locator("strong")).to_have_text(shadow_says)
                expect(served.locator(".model")).to_have_text(expected["served_model"])
                expect(shadow.locator(".model")).to_have_text(SHADOW)
                expect(shadow).to_contain_text(f"score {expected['shadow_score']:.3f}")
                expect(row.locator("td.where .camera")).to_have_text(camera)
                expect(row.locator("td.label")).to_have_text("unlabelled")
                # The frame and, where the served model flagged it (only then is a map kept),
                # its overlay: loaded, side by side on the row.
                pictures = [row.locator('img[data-view="frame"]')]
                if expected["served_anomalous"]:
                    pictures.append(row.locator('img[data-view="overlay"]'))
                else:
                    expect(row.locator("td.no-picture")).to_contain_text("no overlay")
                for img in pictures:
                    expect(img).to_have_attribute("src", re.compile(r"^blob:"))
                    expect(img).to_have_js_property("complete", True)
                    assert img.evaluate("i => i.naturalWidth") > 0
                boxes = [img.bounding_box() for img in pictures]
                for left, right in itertools.pairwise(boxes):
                    assert left is not None and right is not None
                    assert left["x"] + left["width"] <= right["x"]
                    assert abs(left["y"] - right["y"]) < 2
                overlays += len(pictures) - 1
            assert overlays == 1  # the lax camera's row: the served model flagged it
            assert rows.count() >= 2
            page.screenshot(path=str(tmp_path / "disagreements.png"), full_page=True)
            wanted = os.environ.get("INSPECTOR_DISAGREEMENTS_SCREENSHOT")
            if wanted:  # docs/disagreements.png
                page.screenshot(path=wanted)
            assert page.locator("img[src='x']").count() == 0
        finally:
            browser.close()
    assert errors == [], errors
    assert (tmp_path / "disagreements.png").stat().st_size > 10_000
