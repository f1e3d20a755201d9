"""The dashboard and alerts query real series, and a real Prometheus scrapes a running daemon.

A daemon runs in-process on the test broker with the session's small model; a few frames (one
of them undecodable) make its labelled series appear. ``prometheus`` comes from Debian's
package (``.ci/ensure-prometheus``).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import yaml
from kafka_helpers import Topics, create_topics, produce
from prometheus_client.parser import text_string_to_metric_families

from inspector.checkpoint import LoadedCheckpoint
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon
from inspector.tools.synth import SynthSummary

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "inspector.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
SERIES = re.compile(r"\binspector_[a-z0-9_]+")
#: Sample-name suffixes each metric type exposes in the Prometheus text format.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
N_GOOD = 4


@dataclass
class RunningDaemon:
    port: int
    daemon: Daemon

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())


def _jpegs(root: Path, n: int) -> list[bytes]:
    out = []
    for path in sorted((root / "test" / "good").iterdir())[:n]:
        image = cv2.imread(str(path))
        assert image is not None, path
        out.append(cv2.imencode(".jpg", image)[1].tobytes())
    return out


def _sample_value(text: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


@pytest.fixture(scope="module")
def running_daemon(
    bootstrap: str, checkpoint: LoadedCheckpoint, synth_data: SynthSummary
) -> Iterator[RunningDaemon]:
    """A daemon that has inspected ``N_GOOD`` frames and dead-lettered one."""
    topics = Topics.unique()
    create_topics(bootstrap, topics)
    frames = [(f"good-{i}", jpeg) for i, jpeg in enumerate(_jpegs(synth_data.root, N_GOOD))]
    produce(bootstrap, topics.frames, [*frames, ("broken", b"not an image")])
    config = InspectorConfig.model_validate(
        {
            "kafka": topics.kafka_settings(bootstrap),
            "sources": [{"type": "kafka"}],
            "model": {"checkpoint": str(checkpoint.path), "device": "cpu", "warmup_batches": 1},
            "http": {"host": "127.0.0.1", "port": 0},
            # Frames captured (header) before the daemon started: every verdict is late.
            "cameras": {"*": {"deadline_ms": 1}},
        }
    )
    daemon = Daemon(config)
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(daemon.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while daemon.server is None or daemon.server.port == 0:
            assert thread.is_alive() and time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.05)
        running = RunningDaemon(daemon.server.port, daemon)
        while True:
            text = running.metrics_text()
            done = _sample_value(text, "inspector_frames_processed_total") >= N_GOOD
            if done and _sample_value(text, "inspector_frames_failed_total") >= 1:
                break
            assert thread.is_alive() and time.monotonic() < deadline, (
                f"frames not inspected; readiness: {daemon.readiness()}"
            )
            time.sleep(0.2)
        yield running
    finally:
        daemon.request_exit()
        thread.join(60)
    assert exit_code == [0]


def _queried_series() -> dict[str, set[str]]:
    """``{series name: where}`` of every inspector series the dashboard and alerts query."""
    found: dict[str, set[str]] = {}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [("dashboard", t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [
        ("dashboard variable", v["definition"])
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    exprs += [
        ("dashboard annotation", a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a
    ]
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    exprs += [(f"alert {r['alert']}", r["expr"]) for g in groups for r in g["rules"]]
    for where, expr in exprs:
        for name in SERIES.findall(expr):
            found.setdefault(name, set()).add(where)
    return found


def test_every_queried_series_is_exported(running_daemon: RunningDaemon) -> None:
    exported: set[str] = set()
    for family in text_string_to_metric_families(running_daemon.metrics_text()):
        exported |= {s.name for s in family.samples}
        # A labelled metric nobody has used yet has no samples, only its # TYPE line.
        exported |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    queried = _queried_series()
    # The extraction itself works (a regex gone wrong would find nothing and pass).
    assert {"inspector_ready", "inspector_consumer_lag", "inspector_model_info"} <= set(queried)
    missing = {name: sorted(where) for name, where in queried.items() if name not in exported}
    assert not missing, f"queried but not exported by the daemon: {missing}"
    # The series the frames made are real samples, not just declarations.
    samples = {
        s.name
        for family in text_string_to_metric_families(running_daemon.metrics_text())
        for s in family.samples
    }
    assert {
        "inspector_frames_processed_total",
        "inspector_frames_failed_total",
        "inspector_anomaly_score_bucket",
        "inspector_stage_seconds_bucket",
        "inspector_end_to_end_seconds_bucket",
        "inspector_consumer_lag",
        "inspector_model_info",
        "inspector_results_late_total",
    } <= samples
    text = running_daemon.metrics_text()
    processed = _sample_value(text, "inspector_frames_processed_total")
    assert _sample_value(text, "inspector_results_late_total") == processed >= N_GOOD


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api(base: str, path: str, **params: str) -> dict[str, object]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=2) as response:
        body: dict[str, object] = json.loads(response.read())
    return body


def test_prometheus_scrapes_the_daemon(running_daemon: RunningDaemon, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not on PATH: run .ci/ensure-prometheus (installs Debian's "
            "prometheus package)"
        )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                # The shipped rules: Prometheus itself must accept and evaluate them.
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "inspector",
                        "static_configs": [{"targets": [f"127.0.0.1:{running_daemon.port}"]}],
                    }
                ],
            }
        )
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    expected = _sample_value(running_daemon.metrics_text(), "inspector_frames_processed_total")
    try:
        deadline = time.monotonic() + 30
        value = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                body = _api(
                    base,
                    "/api/v1/query",
                    query='sum(inspector_frames_processed_total{job="inspector"})',
                )
            except OSError:  # not listening yet
                time.sleep(0.2)
                continue
            result = body["data"]["result"]  # type: ignore[index]
            if result:
                value = float(result[0]["value"][1])
                if value == expected:
                    break
            time.sleep(0.2)
        assert value == expected, (
            f"Prometheus saw {value}, daemon {expected}:\n{log.read_text()[-3000:]}"
        )
        rules = _api(base, "/api/v1/rules", type="alert")["data"]["groups"]  # type: ignore[index]
        loaded = {r["name"]: r["health"] for g in rules for r in g["rules"]}
        shipped = [
            r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
        ]
        assert sorted(loaded) == sorted(shipped)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
