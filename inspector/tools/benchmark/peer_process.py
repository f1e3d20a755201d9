"""The child processes of ``inspector bench --compare anomalib-openvino-inferencer``.

Each run is a process of its own, so that its peak resident memory is its own: it reports its
``VmHWM`` as it ends (:func:`memory_mb`). This file is run as a script, ``python -I
peer_process.py KIND SPEC OUT``, not as ``-m inspector.tools.benchmark...``: neither child
imports the benchmark package (torch, the synthetic renderer...), only what its deployment
imports.

- ``daemon``: our daemon, as ``inspector run`` runs it (``Daemon(config)``, signal handlers,
  ``run()``), on the configuration in SPEC (a directory source, a JSON-lines sink); it exits
  by itself once the folder's last frame is delivered. OUT gets the exit code and the model
  it served (backend, precision), from its metrics.
- ``inferencer``: anomalib's documented deployment loop, ``OpenVINOInferencer(path=xml,
  device="CPU")`` then ``predict(path)`` per image file; SPEC names the ``.xml``, the frames
  folder and the warm-up count. OUT gets the seconds of the loop and per image its score and
  label.

Both add ``peak_rss_mb`` and ``rss_at_end_mb`` to OUT.

Only the standard library is imported at the top: each kind imports its own stack.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

from inspector.tools.bench_child import child_main


def run_daemon(spec: dict[str, Any]) -> dict[str, Any]:
    """Our daemon over ``spec["config"]`` until its finite source is done."""
    from prometheus_client import CollectorRegistry

    from inspector.runtime.config import explicit_config
    from inspector.runtime.daemon import Daemon

    # As ``inspector run`` logs: the parent keeps the lines in the run's log file.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    registry = CollectorRegistry()
    daemon = Daemon(explicit_config(spec["config"]), registry=registry)
    daemon.install_signal_handlers()
    code = daemon.run()
    # Read while the daemon, and its pipeline's model with it, is still referenced.
    memory = memory_mb()
    served: dict[str, str] = {}
    for metric in registry.collect():
        if metric.name == "inspector_model":  # the Info metric inspector_model_info
            served = next((dict(s.labels) for s in metric.samples if s.value == 1), {})
    return {
        "exit_code": code,
        "backend": served.get("backend"),
        "precision": served.get("precision"),
        **memory,
    }


def run_inferencer(spec: dict[str, Any]) -> dict[str, Any]:
    """The loop anomalib documents: path -> ``OpenVINOInferencer.predict`` -> its result.

    The warm-up predicts the first file ``spec["warmup"]`` times, untimed, as our daemon warms
    its model up before it takes frames. The clock runs from before the first file is read to
    after the last result.
    """
    import numpy as np

    with warnings.catch_warnings():
        # anomalib 2.7 warns on import about its dependencies' renamed modules.
        warnings.simplefilter("ignore", FutureWarning)
        from anomalib.deploy import OpenVINOInferencer

    files = sorted(p for p in Path(spec["frames"]).iterdir() if p.suffix == ".jpg")
    inferencer = OpenVINOInferencer(path=spec["xml"], device="CPU")
    for _ in range(spec["warmup"]):
        inferencer.predict(files[0])
    scores: list[float] = []
    labels: list[bool] = []
    t0 = time.perf_counter()
    for path in files:
        prediction = inferencer.predict(path)
        # What a line acts on: the image's score and verdict.
        scores.append(float(np.asarray(prediction.pred_score).reshape(-1)[0]))
        labels.append(bool(np.asarray(prediction.pred_label).reshape(-1)[0]))
    seconds = time.perf_counter() - t0
    # Read while the inferencer is still referenced: its model is still loaded.
    memory = memory_mb()
    return {"exit_code": 0, "seconds": seconds, "scores": scores, "labels": labels, **memory}


def memory_mb() -> dict[str, float]:
    """This process's peak and present resident set, MiB, from ``/proc/self/status``.

    ``peak_rss_mb`` is ``VmHWM``, not ``ru_maxrss``: Linux carries the high-water mark of the
    memory a process had before ``exec`` into it, and a child starts as a copy of the
    benchmark's own process (GBs, with anomalib, NNCF and both models loaded); ``VmHWM`` is
    that of the memory the run mapped since. ``rss_at_end_mb`` is ``VmRSS`` once the run is
    done, its model still loaded: what stays after loading's transients are gone.
    """
    fields = {"VmHWM:": "peak_rss_mb", "VmRSS:": "rss_at_end_mb"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(maxsplit=1)[0] if line else ""
        if key in fields:
            out[fields[key]] = int(line.split()[1]) / 1024  # kB
    if len(out) != len(fields):
        raise RuntimeError("no VmHWM/VmRSS in /proc/self/status: the memory figures need Linux")
    return out


if __name__ == "__main__":
    child_main({"daemon": run_daemon, "inferencer": run_inferencer})
