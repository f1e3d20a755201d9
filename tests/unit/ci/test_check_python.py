"""`.ci/check-python`: make says which Python it needs before creating a venv with another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs .ci/check-python in a subprocess: the component tier (make component), not make unit.
pytestmark = pytest.mark.component

SCRIPT = Path(__file__).resolve().parents[3] / ".ci" / "check-python"


def _run(python: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), python], capture_output=True, text=True, check=False
    )


def test_python_311_passes() -> None:
    done = _run(sys.executable)  # the suite itself runs on 3.11
    assert done.returncode == 0, done.stderr


def test_another_python_is_refused_with_what_to_do(tmp_path: Path) -> None:
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho 3.12\n")  # what a machine with only 3.12 has
    fake.chmod(0o755)
    done = _run(str(fake))
    assert done.returncode == 1
    assert "is Python 3.12; inspector needs Python 3.11" in done.stderr
    assert "make PYTHON=" in done.stderr


def test_a_missing_python_is_named() -> None:
    done = _run("python3.11-not-installed")
    assert done.returncode == 1 and "python3.11-not-installed not found" in done.stderr
