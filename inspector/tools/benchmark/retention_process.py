"""The daemon process of one window of ``bench/retention.py``: retention on or off.

Run as a script, ``python -I retention_process.py SPEC OUT`` (as
:mod:`inspector.tools.benchmark.peer_process` is, and for the same reasons): ``Daemon`` as
``inspector run`` runs it, on the configuration in SPEC (directory sources, a JSON-lines sink,
the ``retention:`` section of the window); it exits by itself once the folders' last frames are
delivered. Each window is a process of its own, so one window's retention writer, page cache
and OpenMP team never run beside the next window's daemon.

Besides the results (in the JSON-lines file its configuration names), it writes to OUT:

- ``exit_code``;
- ``cpu``: samples ``[wall_s, process_cpu_s, writer_cpu_s]`` every :data:`SAMPLE_S` seconds
  while the daemon runs (wall: epoch seconds, the clock of the results' ``processed_at``;
  process: every thread's CPU time; writer: the retention writer thread's, 0 while it does not
  exist), so that the parent can take the CPU spent between the first frame's read and the last
  result, leaving out loading and warm-up;
- ``retention``: the daemon's own counts of retained frames (by kind), dropped copies (by
  reason) and the folder's bytes at the end, from its registry.

Only the standard library is imported at the top; the daemon's stack is imported in
:func:`run`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from inspector.tools.bench_child import child_main

#: Between CPU samples: fine enough that interpolating at a window's two ends costs well under
#: a percent of a window's CPU, coarse enough that the sampler itself costs nothing measurable.
SAMPLE_S = 0.02
#: The retention sink's writer thread (:class:`inspector.runtime.sinks.retention.RetentionSink`).
WRITER_THREAD = "inspector-retention"


def thread_cpu_s(name: str) -> float:
    """CPU seconds (user + system) of this process's live thread called ``name``; 0 if none."""
    thread = next((t for t in threading.enumerate() if t.name == name), None)
    if thread is None or thread.native_id is None:
        return 0.0
    try:
        stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    except OSError:  # it ended between the lookup and the read
        return 0.0
    # The command name may hold spaces and parentheses: fields count from its closing one.
    utime, stime = (int(v) for v in stat.rsplit(")", 1)[1].split()[11:13])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """Samples wall time, the process's CPU time and the writer thread's, on a thread.

    The writer thread's time is kept at its last value once the thread has ended (its counter
    goes with it).
    """

    def __init__(self, period_s: float = SAMPLE_S) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> list[tuple[float, float, float]]:
        """Stop, take a last sample, and return them all."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.samples

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def _sample(self) -> None:
        writer = thread_cpu_s(WRITER_THREAD)
        if writer == 0.0 and self.samples:
            writer = self.samples[-1][2]
        self.samples.append((time.time(), time.process_time(), writer))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """The daemon over ``spec["config"]`` until its finite sources are done."""
    from prometheus_client import CollectorRegistry

    from inspector.runtime.config import explicit_config
    from inspector.runtime.daemon import Daemon

    # As ``inspector run`` logs: the parent keeps the lines in the window's log file.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    registry = CollectorRegistry()
    daemon = Daemon(explicit_config(spec["config"]), registry=registry)
    daemon.install_signal_handlers()
    sampler = CpuSampler()
    sampler.start()
    try:
        code = daemon.run()
    finally:
        samples = sampler.stop()

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return float(registry.get_sample_value(name, labels or {}) or 0.0)

    retention = {
        "retained": {
            kind: value("inspector_retention_frames_total", {"kind": kind})
            for kind in ("flagged", "sampled")
        },
        "dropped": {
            reason: value("inspector_retention_dropped_total", {"reason": reason})
            for reason in ("queue_full", "too_large", "full", "disk_error", "encode_error")
        },
        "bytes": value("inspector_retention_bytes"),
    }
    return {"exit_code": code, "cpu": samples, "retention": retention}


if __name__ == "__main__":
    child_main(run)
