"""``bench/plant_latency.py`` at its tiniest: the JSON's structure and invariants, never speed.

The script runs as the lead would run it, with a few frames per rate and the performance file
and the JSON in the test's folder (never ``bench/PERFORMANCE.md``): two daemon processes with
the OPC UA server (Basic256Sha256, a user) and the MQTT sink to a Mosquitto of its own (TLS).
Checked: both sinks at both rates, ordered percentiles, every latency positive and within the
run's wall time, each subscriber saw no more frames than were produced (MQTT, at least once
at QoS 1: all of them; OPC UA: all but the updates the server dropped), and the section
written to the performance file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

#: Starts daemon processes, a broker and an OPC UA client.
pytestmark = pytest.mark.component

SCRIPT = Path(__file__).resolve().parents[4] / "bench" / "plant_latency.py"
QUANTILES = ("p50_ms", "p95_ms", "p99_ms")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("plant-bench")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--demo-frames",
            "4",
            "--saturation-frames",
            "6",
            "--record",
            str(tmp / "PERFORMANCE.md"),
            "--json",
            str(tmp / "plant_latency.json"),
            "--work-dir",
            str(tmp / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    printed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads((tmp / "plant_latency.json").read_text()) == printed
    return printed, tmp


def test_both_sinks_at_both_rates_with_ordered_bounded_latencies(
    run: tuple[dict[str, Any], Path],
) -> None:
    result, _ = run
    assert result["benchmark"] == "plant_latency"
    assert result["settings"]["frames"] == {"demo": 4, "saturation": 6}
    assert set(result["rates"]) == {"demo", "saturation"}
    for rate, figures in result["rates"].items():
        assert set(figures["sinks"]) == {"opcua", "mqtt"}, rate
        produced = figures["produced"]
        # Saturation reads every frame; a live camera at the demo's rate may drop stale ones.
        assert 0 < produced <= figures["frames"]
        assert figures["stale_dropped"] == figures["frames"] - produced
        if rate == "saturation":
            assert produced == figures["frames"]
        verdict = figures["capture_to_verdict"]
        assert verdict["n"] == produced
        for sink, f in [*figures["sinks"].items(), ("verdict", verdict)]:
            p50, p95, p99 = (f[q] for q in QUANTILES)
            assert 0 < p50 <= p95 <= p99 <= 1000 * figures["wall_s"], (rate, sink, f)
        for sink, f in figures["sinks"].items():
            assert 0 < f["seen"] <= f["produced"] == produced, (rate, sink)
            assert f["unknown_seen"] == 0
            assert f["p99_ms"] <= f["max_ms"] <= 1000 * figures["wall_s"]
        mqtt, opcua = figures["sinks"]["mqtt"], figures["sinks"]["opcua"]
        assert mqtt["seen"] == mqtt["daemon_observed"] == produced  # QoS 1: every result
        # Latest-value semantics: what the server did not drop, it served and the client saw.
        assert opcua["seen"] == opcua["daemon_observed"] == produced - opcua["updates_dropped"]
        assert opcua["publishing_interval_ms"] == 20


def test_the_section_and_the_json_are_written(run: tuple[dict[str, Any], Path]) -> None:
    result, tmp = run
    section = (tmp / "PERFORMANCE.md").read_text()
    assert "<!-- bench:plant_latency -->" in section
    assert "| demo | opcua |" in section and "| saturation | mqtt |" in section
    assert result["settings"]["mqtt"].startswith("local Debian mosquitto on loopback, TLS")
