"""The daemon process of one rate of ``bench/plant_latency.py``: both plant sinks on.

Run as a script, ``python -I plant_process.py SPEC OUT`` (as
:mod:`inspector.tools.benchmark.retention_process` is, and for the same reasons): ``Daemon`` as
``inspector run`` runs it, on the configuration in SPEC (camera sources playing video files,
the JSON-lines, MQTT and OPC UA sinks); it exits by itself once the files' last frames are
delivered, but not before the parent says its subscribers saw what they will see: the OPC UA
server stops with the daemon, and its last values must be published first. The subscribers
live in the parent, as a PLC lives on another machine: the daemon's threads never share a GIL
with them.

Its folder's ``finished`` file appears once the pipeline is done (every result delivered to
every sink); it then waits for a ``stop`` file (at most ``spec["linger_s"]``) and shuts down.

Besides the results (in the JSON-lines file its configuration names), it writes to OUT the
exit code and the daemon's own plant figures from its registry: per sink the count and sum of
``inspector_plant_latency_seconds`` and ``inspector_plant_late_total``, and per camera
``inspector_opcua_updates_dropped_total``.

Only the standard library is imported at the top; the daemon's stack is imported in
:func:`run`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from inspector.tools.bench_child import child_main

#: The plant sinks' ``sink`` labels.
SINKS = ("opcua", "mqtt")


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """The daemon over ``spec["config"]`` until its finite sources are done."""
    from prometheus_client import CollectorRegistry

    from inspector.runtime.config import explicit_config
    from inspector.runtime.daemon import Daemon

    # As ``inspector run`` logs: the parent keeps the lines in the run's log file.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    finished, stop = Path("finished"), Path("stop")  # in the run's folder (the cwd)

    class Lingering(Daemon):
        """Waits for the parent's ``stop`` before shutting down (see the module)."""

        def shutdown(self) -> bool:
            finished.touch()
            deadline = time.monotonic() + float(spec["linger_s"])
            while not stop.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return super().shutdown()

    registry = CollectorRegistry()
    daemon = Lingering(explicit_config(spec["config"]), registry=registry)
    daemon.install_signal_handlers()
    code = daemon.run()

    def value(name: str, labels: dict[str, str]) -> float:
        return float(registry.get_sample_value(name, labels) or 0.0)

    plant = {
        sink: {
            "count": value("inspector_plant_latency_seconds_count", {"sink": sink}),
            "sum_s": value("inspector_plant_latency_seconds_sum", {"sink": sink}),
            "late": value("inspector_plant_late_total", {"sink": sink}),
        }
        for sink in SINKS
    }
    dropped = {
        camera: value("inspector_opcua_updates_dropped_total", {"camera": camera})
        for camera in spec["cameras"]
    }
    return {"exit_code": code, "plant": plant, "opcua_updates_dropped": dropped}


if __name__ == "__main__":
    child_main(run)
