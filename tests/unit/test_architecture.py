"""The house's import rules (``[tool.importlinter]`` in pyproject.toml) hold for the code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Runs lint-imports in a subprocess: the component tier (make component), not make unit.
pytestmark = pytest.mark.component

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    # The daemon never imports tools or the ML workflow; the model has no I/O; the stages share
    # only leaves and never import what wires them; the Kafka wing imports no stage; the data
    # path never imports the control plane; no module imports itself in a loop.
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is missing: pip install -e '.[dev]'"
    result = subprocess.run(
        [lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "8 kept, 0 broken" in result.stdout
