"""`.ci/check-disk`: the install step refuses up front, with a reason, when the disk is too full."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / ".ci" / "check-disk"


def _run(needs_gb: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INSPECTOR_INSTALL_NEEDS_GB": str(needs_gb)}
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.component  # runs .ci/check-disk in a subprocess
def test_enough_space_passes_quietly(tmp_path: Path) -> None:
    done = _run(0, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.component  # runs .ci/check-disk in a subprocess
def test_too_little_space_fails_and_says_what_to_free(tmp_path: Path) -> None:
    # No test machine has a petabyte free, so this always exercises the refusal.
    done = _run(1_000_000, tmp_path)
    assert done.returncode == 1
    assert "needs about 1000000 GB free" in done.stderr
    assert "Free some space" in done.stderr


@pytest.mark.parametrize("target", ["$(STAMP)", "$(DEMO_STAMP)"])
def test_every_install_target_checks_the_disk_first(target: str) -> None:
    makefile = (SCRIPT.parents[1] / "Makefile").read_text()
    recipe = makefile.split(f"{target}: pyproject.toml")[1].split("\n\n")[0]
    lines = [line.strip() for line in recipe.splitlines()[1:]]
    assert lines[0] == "@bash .ci/check-disk"
    assert any("pip install" in line for line in lines[1:])
