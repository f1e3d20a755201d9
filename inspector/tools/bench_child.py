"""The entry of a benchmark's child process: one JSON spec in, one JSON report out.

The retention, shadow, plant-latency and peer benchmarks each run the daemon (or a peer) in a
process of their own, started as ``python -I <script> [KIND] SPEC OUT``, so that every window
starts from the same state and its CPU time is its own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

#: A child's work: the spec in, the report out (with an ``exit_code``).
Run = Callable[[dict[str, Any]], dict[str, Any]]


def child_main(runs: Mapping[str, Run] | Run) -> NoReturn:
    """Read ``SPEC`` (after ``KIND`` when ``runs`` maps kinds), run, write ``OUT``, exit.

    Exits with the report's ``exit_code``, at once, as ``inspector run`` ends: not after
    torch's (and OpenVINO's) slow teardown.
    """
    argv = sys.argv[1:]
    run = runs[argv.pop(0)] if isinstance(runs, Mapping) else runs
    spec_path, out_path = argv
    report = run(json.loads(Path(spec_path).read_text()))
    Path(out_path).write_text(json.dumps(report))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(report["exit_code"]))


__all__ = ["Run", "child_main"]
