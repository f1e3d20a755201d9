"""The operator console in a real browser: Debian's chromium, driven by Playwright.

A real daemon (two looping folders of the synthetic line, the session's trained model,
retention on, a read token and an admin token) and a headless chromium: the console asks for
the read token, shows a tile per camera and flagged thumbnails as they are retained; the
review queue takes two labels from the keyboard (asking for the admin token once), and the
labels are then read back through the API. Hostile names are shown as text: a camera id that
breaks out of an HTML attribute (valid under the id rule) and the frame id
``<img/src=x/onerror=alert(1)>`` (the id rule forbids ``/`` in camera ids, frame ids keep it).

A missing browser fails the test (``.ci/ensure-chromium`` installs it); it never skips.
Screenshots are kept under the test's tmp dir; set ``INSPECTOR_CONSOLE_SCREENSHOT`` to a path
to also save the overview there (how ``docs/console.png`` is made).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from browser_helpers import give_read_token, record_page_errors
from results_helpers import (
    ADMIN,
    READER,
    RunningDaemon,
    daemon_config,
    frames_folder,
    start_daemon,
)
from retention_helpers import inspection

from inspector.checkpoint import LoadedCheckpoint
from inspector.runtime.ids import valid_frame_id, valid_id
from inspector.tools.synth import SynthSummary

#: Breaks out of an attribute value (``<img src="...">``) and opens a tag if ever written as
#: HTML; valid under the id rule (no space, /, \, ?, #, %).
HOSTILE_CAMERA = 'x"onerror="alert(1)"<b>cam'
HOSTILE_FRAME = "<img/src=x/onerror=alert(1)>"
LINE_CAMERA = "line-1"
#: A real daemon (a server, the session's trained model); the browser test starts chromium.
pytestmark = pytest.mark.component


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "no chromium on PATH: run .ci/ensure-chromium (Debian's chromium package)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def line(
    checkpoint: LoadedCheckpoint, synth_data: SynthSummary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    assert valid_id(HOSTILE_CAMERA) and valid_frame_id(HOSTILE_FRAME)
    assert not valid_id(HOSTILE_FRAME)
    root = tmp_path_factory.mktemp("console")
    line_frames = frames_folder(synth_data.root, root / "line", per_class=2)
    hostile_frames = root / "hostile"
    hostile_frames.mkdir()
    for src in sorted(line_frames.iterdir()):
        if not src.name.startswith("good_"):
            shutil.copy(src, hostile_frames / src.name)
    sources = [
        {
            "type": "directory",
            "path": str(line_frames),
            "camera_id": LINE_CAMERA,
            "loop": True,
            "fps": 3,
        },
        {
            "type": "directory",
            "path": str(hostile_frames),
            "camera_id": HOSTILE_CAMERA,
            "loop": True,
            "fps": 1,
        },
    ]
    config = daemon_config(
        checkpoint.path, sources, root / "retained", read_token=READER, good_sample_rate=0.0
    )
    running = start_daemon(config)
    try:
        yield running
    finally:
        running.stop()


def _api(line: RunningDaemon, path: str) -> dict[str, object]:
    response = line.get(path, token=READER)
    assert response.status_code == 200, response.text
    found: dict[str, object] = response.json()
    return found


def test_console_shows_the_line_takes_keyboard_labels_and_escapes_names(
    line: RunningDaemon, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    expect.set_options(timeout=60_000)  # waits, not timings: the line runs on two CPU cores
    dialogs: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)

            def on_dialog(dialog: object) -> None:
                dialogs.append(f"{dialog.type}: {dialog.message}")  # type: ignore[attr-defined]
                dialog.dismiss()  # type: ignore[attr-defined]

            page.on("dialog", on_dialog)
            record_page_errors(page, errors)

            # The page itself is open; its data needs the read token, asked for once.
            page.goto(line.base + "/")
            give_read_token(page, READER)

            # A tile per camera; the hostile camera id is text, not markup.
            hostile_tile = page.locator(".tile", has=page.locator("h3", has_text="onerror"))
            hostile_tile.wait_for()
            assert hostile_tile.locator("h3").text_content() == HOSTILE_CAMERA
            assert page.locator(".tile b").count() == 0
            page.locator(f'.tile[data-camera="{LINE_CAMERA}"]').wait_for()

            # Flagged frames appear as overlay thumbnails, newest first, more as they come.
            # (Locators and expect: the page's CSP forbids the eval behind wait_for_function.)
            shown = page.locator('#stream img[src^="blob:"]')
            shown.nth(2).wait_for()
            newest = page.locator("#stream a.thumb").first
            first = newest.get_attribute("data-frame-id")
            assert first is not None
            line.retention.write(inspection(HOSTILE_FRAME, camera_id=HOSTILE_CAMERA))
            expect(newest).not_to_have_attribute("data-frame-id", first)
            shown.nth(3).wait_for()
            hostile_thumb = page.locator(f'#stream a.thumb[data-frame-id="{HOSTILE_FRAME}"]')
            hostile_thumb.wait_for()
            assert hostile_thumb.locator(".camera").text_content() == HOSTILE_CAMERA
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

            # The review queue: f, then d with a kind; the admin token is asked for once.
            page.goto(line.base + "/review")
            page.wait_for_selector("#current:not([hidden])")
            page.locator('#current-image[src^="blob:"]').wait_for()
            false_alarm = page.text_content("#current-id")
            assert false_alarm
            page.keyboard.press("f")
            page.wait_for_selector("#token-panel:not([hidden])")
            assert "Admin token" in page.text_content("#token-label")  # type: ignore[operator]
            page.fill("#token-input", ADMIN)
            page.press("#token-input", "Enter")
            expect(page.locator("#current-id")).not_to_have_text(false_alarm)
            defect = page.text_content("#current-id")
            assert defect
            page.keyboard.press("d")
            page.wait_for_selector("#kind-form:not([hidden])")
            page.fill("#kind-input", "scratch")
            page.press("#kind-input", "Enter")
            expect(page.locator("#status")).to_contain_text(defect)
            page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

            # The labels, read back through the API (with the read token).
            assert false_alarm and defect and false_alarm != defect
            fa = _api(line, f"/v1/results/{quote(false_alarm, safe='')}/detail")["frame"]
            df = _api(line, f"/v1/results/{quote(defect, safe='')}/detail")["frame"]
            assert (fa["label"], fa["kind"]) == ("false_alarm", None)  # type: ignore[index]
            assert (df["label"], df["kind"]) == ("defect", "scratch")  # type: ignore[index]

            # A frame's page: pictures, regions and the label just set.
            page.goto(line.base + "/frame?id=" + quote(defect, safe=""))
            page.locator('#view-overlay[src^="blob:"]').wait_for()
            page.locator('#view-mask[src^="blob:"]').wait_for()
            page.locator("#regions tbody tr").first.wait_for()
            label_fact = page.locator("#facts dt", has_text=re.compile(r"^label$")).locator(
                "xpath=following-sibling::dd[1]"
            )
            expect(label_fact).to_have_text("defect (scratch)")
            page.screenshot(path=str(tmp_path / "frame.png"), full_page=True)

            # A slip is undone: the label removed, then set again from the form.
            page.click("#label-clear")
            expect(label_fact).to_have_text("none")
            detail = f"/v1/results/{quote(defect, safe='')}/detail"
            assert _api(line, detail)["frame"]["label"] is None  # type: ignore[index]
            page.select_option("#label-select", "defect")
            page.fill("#label-kind", "scratch")
            page.click("#label-form button[type=submit]")
            expect(label_fact).to_have_text("defect (scratch)")

            # The hostile frame's page: its id is text in the title, the heading and the facts.
            page.goto(line.base + "/frame?id=" + quote(HOSTILE_FRAME, safe=""))
            page.locator('#view-overlay[src^="blob:"]').wait_for()
            assert page.text_content("#frame-title .frame-id") == HOSTILE_FRAME
            assert HOSTILE_FRAME in page.title()
            expect(page.locator("#facts")).to_contain_text(HOSTILE_CAMERA)

            # Back on the overview, the tiles count the labels.
            page.goto(line.base + "/")
            counted = page.locator(".tile dd", has_text=re.compile(r"^1$"))
            counted.first.wait_for()
            wanted = os.environ.get("INSPECTOR_CONSOLE_SCREENSHOT")
            if wanted:  # docs/console.png
                page.screenshot(path=wanted)
            # The threshold what-if: the line's camera, a threshold slid to 0.9, the table answers
            # as the API does (nothing is applied).
            option = page.locator(f'#what-if-camera option[value="{LINE_CAMERA}"]')
            option.wait_for(state="attached")
            page.select_option("#what-if-camera", LINE_CAMERA)
            page.fill("#what-if-threshold", "0.9")
            expect(page.locator("#what-if-value")).to_have_text("0.90")
            rows = page.locator("#what-if-table tbody tr")
            expect(rows).to_have_count(9)
            expect(rows.nth(0).locator("td").nth(1)).to_have_text("0.9")
            # The line keeps flowing: the page's count is of fewer frames than a later answer.
            expect(rows.nth(1).locator("td").nth(1)).to_have_text(re.compile(r"^\d+$"))
            shown_flagged = int(rows.nth(1).locator("td").nth(1).text_content() or "-1")
            answer = _api(line, f"/v1/cameras/{LINE_CAMERA}/what-if?image_threshold=0.9")
            assert 0 <= shown_flagged <= answer["proposed"]["flagged"]  # type: ignore[index]
            page.screenshot(path=str(tmp_path / "what-if.png"), full_page=True)
            page.screenshot(path=str(tmp_path / "overview-labelled.png"), full_page=True)
            assert page.locator("img[src='x']").count() == 0
        finally:
            browser.close()

    tiles = _api(line, "/v1/console/overview")["tiles"]
    labels = [t["labels"] for t in tiles]  # type: ignore[attr-defined]
    assert sum(c["false_alarm"] for c in labels) == 1
    assert sum(c["defect"] for c in labels) == 1
    assert dialogs == [], dialogs  # no alert, confirm or prompt ever fired
    assert errors == [], errors
    assert (tmp_path / "overview.png").stat().st_size > 10_000
