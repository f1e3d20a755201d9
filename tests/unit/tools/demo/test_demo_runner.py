"""The demo starts its cameras only once the daemon's ``/readyz`` answers 200, then says where
its operator console is."""

from __future__ import annotations

import re
import threading

import pytest
import requests
from prometheus_client import CollectorRegistry
from rich.console import Console

from inspector.runtime.control.server import HttpServer
from inspector.runtime.metrics import Metrics
from inspector.tools.demo.runner import console_lines, wait_until_ready

WAITING = "kafka source kafka: waiting for a partition assignment of inspector.frames (group g)"


class Starting:
    """A daemon's readiness over its start: warm-up, the group join (a countdown), ready."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> list[str]:
        self.calls += 1
        if self.calls <= 2:
            return ["model not warmed up"]
        if self.calls <= 5:
            return [f"{WAITING}: ready as a standby in {45 - self.calls} s if none comes"]
        return []


@pytest.mark.component  # serves /readyz over HTTP
def test_waits_for_readyz_200_and_prints_each_reason_once() -> None:
    registry = CollectorRegistry()
    readiness = Starting()
    server = HttpServer("127.0.0.1", 0, registry, readiness, Metrics(registry))
    server.start()
    console = Console(record=True, width=200)
    try:
        wait_until_ready(f"http://127.0.0.1:{server.port}/readyz", threading.Event(), console)
    finally:
        server.stop()
    assert readiness.calls == 6  # returned on the first 200, not before
    lines = console.export_text().splitlines()
    assert lines == [
        "  not ready yet: model not warmed up",
        f"  not ready yet: {WAITING}: ready as a standby in 42 s if none comes",
    ]  # a countdown is not news: one line for it


def test_stops_waiting_when_the_demo_stops() -> None:
    stop = threading.Event()
    stop.set()
    console = Console(record=True)
    wait_until_ready("http://127.0.0.1:9/readyz", stop, console)  # nothing listens there
    assert console.export_text() == ""


@pytest.mark.component  # serves the console over HTTP
def test_the_console_address_it_prints_serves_the_console() -> None:
    registry = CollectorRegistry()
    server = HttpServer("127.0.0.1", 0, registry, lambda: [], Metrics(registry))
    server.start()
    try:
        first, token_line = console_lines(server.port, "demo-admin-token-0123456789")
        found = re.search(r"operator console: (\S+)", first)
        assert found is not None, first
        page = requests.get(found.group(1), timeout=10)
        assert page.status_code == 200 and "console.js" in page.text
        assert f"http://127.0.0.1:{server.port}/metrics" in first
    finally:
        server.stop()
    assert token_line.endswith("the admin token demo-admin-token-0123456789")
    assert len(console_lines(9108, None)) == 1  # no token: nothing to give
