"""Aravis' software GigE Vision camera on loopback, for the GenICam tests.

``arv-fake-gv-camera-0.8`` (Debian's aravis-tools, installed by ``.ci/ensure-aravis``) speaks
GVCP and GVSP over UDP like a real camera. Only one can listen on 127.0.0.1 (GVCP's fixed port
3956), so tests use it one at a time.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from inspector.runtime.sources.aravis import DeviceInfo, list_devices

FAKE_CAMERA = "arv-fake-gv-camera-0.8"


@dataclass
class FakeCamera:
    """A running software camera."""

    process: subprocess.Popen[bytes]
    device: DeviceInfo

    def kill(self) -> None:
        """Gone at once, as a camera whose cable is pulled."""
        self.process.kill()
        self.process.wait(10)


@contextmanager
def fake_camera(serial: str | None = None, timeout: float = 15.0) -> Iterator[FakeCamera]:
    """Start a fake camera on 127.0.0.1 and wait until discovery finds it."""
    binary = shutil.which(FAKE_CAMERA)
    if binary is None:
        pytest.fail(f"{FAKE_CAMERA} is not on PATH: run bash .ci/ensure-aravis .venv")
    serial = serial or f"T{uuid.uuid4().hex[:6].upper()}"
    process = subprocess.Popen(
        [binary, "--interface", "127.0.0.1", "--serial", serial],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in list_devices() if d.serial == serial]
            if found:
                break
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                pytest.fail(f"{FAKE_CAMERA} exited with {process.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{FAKE_CAMERA} {serial} not discovered within {timeout:.0f} s")
            time.sleep(0.2)
        yield FakeCamera(process, found[0])
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
