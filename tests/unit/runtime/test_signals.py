"""Signals reach the handler from a watcher thread, even while the main thread is busy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# Sends signals to a Python subprocess: the component tier (make component), not make unit.
pytestmark = pytest.mark.component

_SCRIPT = textwrap.dedent(
    """
    import ctypes, os, signal
    from inspector.runtime.signals import watch_signals

    def handler(signum):
        print("got", signal.Signals(signum).name, flush=True)
        if signum == signal.SIGTERM:
            os._exit(3)

    watch_signals(handler)
    signal.signal(signal.SIGUSR2, lambda s, f: None)  # someone else's Python-level handler
    print("ready", flush=True)
    while True:  # C calls (a signal ends one early; the next starts at once)
        ctypes.CDLL(None).sleep(30)
    """
)


def _run(*signals: signal.Signals) -> tuple[list[str], int, float]:
    with subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        sent = time.monotonic()
        for sig in signals:
            os.kill(p.pid, sig)
            time.sleep(0.2)
        try:
            code = p.wait(10)
        finally:
            p.kill()
        took = time.monotonic() - sent
        return p.stdout.read().split("\n")[:-1], code, took


def test_watched_signals_reach_the_handler_while_the_main_thread_is_blocked() -> None:
    lines, code, took = _run(signal.SIGUSR2, signal.SIGHUP, signal.SIGTERM)
    # SIGUSR2 also travels the wake-up pipe (it has a Python handler) but is not ours.
    assert lines == ["got SIGHUP", "got SIGTERM"]
    assert code == 3
    assert took < 5  # the main thread was still inside its 30 s C call


def test_signals_not_watched_keep_their_default_action() -> None:
    lines, code, _ = _run(signal.SIGUSR1)
    assert lines == [] and code == -signal.SIGUSR1
