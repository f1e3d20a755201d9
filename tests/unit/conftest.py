"""The fast tier's contract: `make unit` starts no subprocess and no server.

`make unit` runs ``pytest tests/unit -m "not component and not soak"`` with
``INSPECTOR_FAST_TIER=1``. In that run every selected unit test is refused what only the
``component`` tier may do: starting a process (``subprocess.Popen``, ``os.system``, a fork or
spawn) or listening on a socket (uvicorn, the daemon's HTTP server, schemathesis against a live
app). A test that tries fails, with a message naming what it did and the marker it needs. The
refusal is recorded as well as raised, so production code that catches the error (a daemon that
logs a failed bind and carries on) cannot turn the violation into a pass.

``pytest tests/unit -m "not component"`` enforces the same contract without the variable; a run
that selects ``component`` tests (``make component``, ``make test``) is not restricted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: Set by `make unit`: the run is the fast tier, whatever its ``-m``.
FAST_TIER_ENV = "INSPECTOR_FAST_TIER"

_UNIT_DIR = Path(__file__).parent
#: Frames of the call stack a refusal shows (where the process or server was started).
_STACK_FRAMES = 8


class FastTierError(RuntimeError):
    """A fast-tier test started a process or a server."""


def fast_tier(config: pytest.Config) -> bool:
    """Whether this run is the fast tier (`make unit`)."""
    if os.environ.get(FAST_TIER_ENV) == "1":
        return True
    return "not component" in (config.option.markexpr or "")


def _in_unit_dir(item: pytest.Item) -> bool:
    return _UNIT_DIR in Path(str(item.path)).parents


#: Violations of the test now running, reported as its failure (see pytest_runtest_makereport).
_violations: list[str] = []


def _refuse(item: pytest.Item, what: str) -> FastTierError:
    stack = traceback.extract_stack()[:-2]  # without this function and the refusal
    ours = [f for f in stack if "/_pytest/" not in f.filename and "/pluggy/" not in f.filename]
    where = "".join(traceback.format_list(ours[-_STACK_FRAMES:]))
    message = (
        f"{item.nodeid} {what} in the fast tier (`make unit`: no subprocess, no server, no "
        "broker). Mark the test (or its module, with `pytestmark = pytest.mark.component`) "
        "`@pytest.mark.component`: it then runs in `make component` and `make test`.\n"
        f"Where:\n{where}"
    )
    _violations.append(message)
    return FastTierError(message)


def _refusals(item: pytest.Item) -> dict[tuple[Any, str], Callable[..., Any]]:
    """Replacements for everything that starts a process or listens on a socket."""

    def popen_init(self: subprocess.Popen[Any], args: Any, *_: Any, **__: Any) -> None:
        raise _refuse(item, f"started a subprocess ({args!r})")

    def system(command: str) -> int:
        raise _refuse(item, f"started a subprocess (os.system({command!r}))")

    def fork() -> int:
        raise _refuse(item, "forked a process (os.fork)")

    def posix_spawn(path: Any, *_: Any, **__: Any) -> int:
        raise _refuse(item, f"spawned a process ({path!r})")

    def listen(self: socket.socket, *_: Any) -> None:
        refusal = _refuse(item, f"listened on a socket ({self.getsockname()!r}): a server")
        self.close()  # the server that fails here may not: its socket would warn in a later test
        raise refusal

    refusals: dict[tuple[Any, str], Callable[..., Any]] = {
        (subprocess.Popen, "__init__"): popen_init,
        (os, "system"): system,
        (os, "fork"): fork,
        (socket.socket, "listen"): listen,
    }
    for name in ("posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            refusals[(os, name)] = posix_spawn
    return refusals


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Refuse processes and servers from setup to teardown of each fast-tier unit test."""
    if (
        not fast_tier(item.config)
        or not _in_unit_dir(item)
        or item.get_closest_marker("component") is not None
    ):
        yield
        return
    refusals = _refusals(item)
    # Each owner's own attribute, or none: socket.socket inherits listen from _socket.socket.
    originals = {(owner, name): vars(owner).get(name) for owner, name in refusals}
    for (owner, name), replacement in refusals.items():
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for (owner, name), original in originals.items():
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        _violations.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A phase that hit a refusal fails, even where the code under test swallowed the error."""
    outcome = yield
    if not _violations:
        return
    report = outcome.get_result()
    violations = "\n".join(dict.fromkeys(_violations))
    _violations.clear()
    if report.passed or report.skipped:
        report.outcome = "failed"
        report.longrepr = violations
    elif not _violations_shown(report, violations):
        report.sections.append(("fast tier", violations))


def _violations_shown(report: pytest.TestReport, violations: str) -> bool:
    """Whether the failure already shows the refusal (the test did not catch it)."""
    return violations.splitlines()[0] in str(report.longrepr)
