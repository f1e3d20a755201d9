"""``bench/shadow.py`` at its tiniest: the JSON's structure and invariants, never its speed.

The script runs as the lead would run it (``--tiny``, with the performance file and the JSON
in the test's folder, never ``bench/PERFORMANCE.md``): four daemon processes, one pair of
windows per rate. Checked: every frame ends as one result in every window, both conditions are
there for both rates, only ``on`` windows carry shadow verdicts (the rest of their frames
counted as skipped), and the ratios are the windows' medians and pairs divided.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

#: Starts daemon processes.
pytestmark = pytest.mark.component

SCRIPT = Path(__file__).resolve().parents[4] / "bench" / "shadow.py"
COMPARED = ("latency_p50_ms", "latency_p95_ms", "results_per_s", "cpu_ms_per_result")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("shadow-bench")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--record",
            str(tmp / "PERFORMANCE.md"),
            "--json",
            str(tmp / "shadow.json"),
            "--work-dir",
            str(tmp / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    printed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads((tmp / "shadow.json").read_text()) == printed
    return printed, tmp


def test_every_frame_is_accounted_in_both_conditions_of_both_rates(
    run: tuple[dict[str, Any], Path],
) -> None:
    result, _ = run
    assert result["benchmark"] == "shadow" and result["settings"]["pairs"] == 1
    assert set(result["rates"]) == {"demo", "saturation"}
    for rate, figures in result["rates"].items():
        windows = figures["windows"]
        assert [w["shadow"] for w in windows] == [False, True]  # the first pair: off, then on
        assert all(w["rate"] == rate for w in windows)
        for w in windows:
            assert w["results"] == w["frames"] == figures["frames_per_window"] == 8
            if w["shadow"]:
                assert w["shadowed"] + w["skipped"] == w["results"]
            else:  # no recipe names the shadow: no verdict, nothing skipped
                assert w["shadowed"] == w["skipped"] == 0 == w["disagreements"]
            assert 0 <= w["disagreements"] <= w["shadowed"]
            assert w["seconds"] > 0 and w["latency_p95_ms"] >= w["latency_p50_ms"] > 0
        on = [w for w in windows if w["shadow"]]
        assert figures["skipped"] == sum(w["skipped"] for w in on)
        shared = sum(w["shadowed"] for w in on) / sum(w["results"] for w in on)
        assert figures["shadowed_share"] == pytest.approx(shared)
    assert result["rates"]["demo"]["offered_results_per_s"] == pytest.approx(10.0)  # the demo's


def test_the_ratios_are_those_of_the_windows(run: tuple[dict[str, Any], Path]) -> None:
    result, _ = run
    for figures in result["rates"].values():
        by = {
            c: [w for w in figures["windows"] if w["shadow"] == (c == "on")] for c in ("off", "on")
        }
        for key in COMPARED:
            medians = {c: statistics.median(w[key] for w in ws) for c, ws in by.items()}
            assert figures["median"]["off"][key] == pytest.approx(medians["off"])
            assert figures["ratio_on_off"][key] == pytest.approx(medians["on"] / medians["off"])
            pairs = [b[key] / a[key] for a, b in zip(by["off"], by["on"], strict=True)]
            assert figures["pair_ratios_on_off"][key] == pytest.approx(pairs)
    target = result["target"]
    change = target["latency_change"]
    demo = result["rates"]["demo"]["ratio_on_off"]
    assert change["latency_p50_ms"] == pytest.approx(demo["latency_p50_ms"] - 1)
    assert change["latency_p95_ms"] == pytest.approx(demo["latency_p95_ms"] - 1)
    assert target["met"] == all(abs(c) <= target["max_change"] for c in change.values())


def test_the_section_goes_to_the_record_path_given(run: tuple[dict[str, Any], Path]) -> None:
    _, tmp = run
    text = (tmp / "PERFORMANCE.md").read_text()
    assert "<!-- bench:shadow -->" in text and "| demo | on |" in text
    assert str(tmp / "shadow.json") in text
