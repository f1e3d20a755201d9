"""Run one child process of the benchmark (:mod:`inspector.tools.benchmark.peer_process`).

Each run being a process of its own keeps its peak resident memory its own; the child reports
it (its ``VmHWM``) with its other figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.errors import InspectorError

#: The child script.
SCRIPT = Path(__file__).with_name("peer_process.py")
#: Lines of the child's log quoted when it fails.
_LOG_TAIL = 30


@dataclass(frozen=True)
class Finished:
    """A child that ended well.

    Attributes:
        report: What it wrote to its ``OUT`` file.
        peak_rss_mb: Its peak resident memory, MiB.
        rss_at_end_mb: Its resident memory once its run was done, its model still loaded.
        wall_s: From its start to its end (start-up, loading and teardown included).
    """

    report: dict[str, Any]
    peak_rss_mb: float
    rss_at_end_mb: float
    wall_s: float


def run_child(kind: str, spec: dict[str, Any], folder: Path, timeout_s: float) -> Finished:
    """Run ``peer_process.py kind`` on ``spec`` in ``folder`` (its working directory).

    The child's output goes to ``folder/child.log``. ``INSPECTOR_*`` variables are left out of
    its environment: what it runs is what the benchmark configured, not what the shell exports.

    Raises:
        InspectorError: It failed, or ran past ``timeout_s`` (then it is killed); the message
            quotes the end of its log.
    """
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, out_path, log_path = (folder / n for n in ("spec.json", "out.json", "child.log"))
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
    # -I: neither the script's folder (whose module names would shadow packages) nor the
    # user's site-packages on the path.
    command = [sys.executable, "-I", str(SCRIPT), kind, str(spec_path), str(out_path)]
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        child = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=log)
        try:
            code: int | None = child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            code = None
    wall_s = time.monotonic() - t0
    if code != 0 or not out_path.exists():
        why = f"ran past {timeout_s:g} s" if code is None else f"exited with {code}"
        raise InspectorError(f"bench: the {kind} process {why}; {log_tail(folder)}")
    report: dict[str, Any] = json.loads(out_path.read_text())
    peak, end = (float(report.pop(key)) for key in ("peak_rss_mb", "rss_at_end_mb"))
    return Finished(report, peak, end, wall_s)


def log_tail(folder: Path) -> str:
    """The end of the log of the child run in ``folder``, to quote in an error.

    Quoted rather than pointed at: the folder is a temporary one, gone with the error.
    """
    lines = (folder / "child.log").read_text(errors="replace").splitlines()[-_LOG_TAIL:]
    return "the end of its log:\n" + "\n".join(lines)
