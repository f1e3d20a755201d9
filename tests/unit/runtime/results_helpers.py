"""A real daemon with retention on, for the results API and console tests.

The daemon is :class:`inspector.runtime.daemon.Daemon` itself (directory sources, the session's
trained checkpoint, its HTTP server on a free port), run on a thread like ``inspector run``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry

from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon
from inspector.runtime.sinks.retention import RetentionSink

ADMIN = "admin-token-for-the-console-0123"
READER = "read-token-for-the-console-0123"
#: Valid under the id rule (no space, /, \, ?, #, %), and HTML if ever rendered as HTML.
XSS_CAMERA = "<img/src=x/onerror=alert(1)>"


def frames_folder(data_root: Path, folder: Path, per_class: int = 3) -> Path:
    """Good frames and defects of the synthetic line, copied to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for cls in ("good", "crack", "missing", "scratch"):
        found = data_root / "test" / cls
        if not found.is_dir():
            continue
        for src in sorted(found.iterdir())[:per_class]:
            shutil.copy(src, folder / f"{cls}_{src.name}")
    return folder


def daemon_config(
    checkpoint: Path,
    sources: list[dict[str, Any]],
    retention: Path | None,
    *,
    read_token: str | None = None,
    good_sample_rate: float = 1.0,
    **overrides: Any,
) -> InspectorConfig:
    values: dict[str, Any] = {
        "sources": sources,
        "model": {
            "checkpoint": str(checkpoint),
            "device": "cpu",
            "warmup_batches": 0,
            "precision": "fp32",
        },
        "batcher": {"max_batch_size": 4, "max_wait_ms": 5},
        "sinks": {"kafka": {"enabled": False}},
        "http": {"host": "127.0.0.1", "port": 0, "admin_token": ADMIN, "read_token": read_token},
        "retention": (
            {"enabled": True, "path": str(retention), "good_sample_rate": good_sample_rate}
            if retention is not None
            else {"enabled": False}
        ),
        "daemon": {"drain_timeout_s": 10},
        **overrides,
    }
    return InspectorConfig.model_validate(values)


def wait_for(
    condition: Callable[[], bool], timeout: float = 120.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class RunningDaemon:
    daemon: Daemon
    thread: threading.Thread
    registry: CollectorRegistry
    exit_codes: list[int]

    @property
    def base(self) -> str:
        assert self.daemon.server is not None
        return f"http://127.0.0.1:{self.daemon.server.port}"

    @property
    def retention(self) -> RetentionSink:
        sink = self.daemon.results.retention
        assert sink is not None
        return sink

    def get(self, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.base + path, headers=headers, timeout=30, **kw)

    def post(self, path: str, token: str | None = ADMIN, **kw: Any) -> requests.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        headers = {**auth, **kw.pop("headers", {})}
        return requests.post(self.base + path, headers=headers, timeout=30, **kw)

    def delete(self, path: str, token: str | None = ADMIN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.delete(self.base + path, headers=headers, timeout=30)

    def stop(self) -> None:
        self.daemon.request_exit()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the daemon did not stop"


def start_daemon(config: InspectorConfig) -> RunningDaemon:
    registry = CollectorRegistry()
    daemon = Daemon(config, registry=registry)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), name="test-daemon")
    thread.start()
    running = RunningDaemon(daemon, thread, registry, codes)

    def ready() -> bool:
        assert thread.is_alive(), "the daemon stopped during start-up"
        if daemon.server is None or not daemon.server.port:
            return False
        return requests.get(running.base + "/readyz", timeout=5).status_code == 200

    try:
        wait_for(ready, what="/readyz 200")
    except BaseException:
        running.stop()
        raise
    return running
