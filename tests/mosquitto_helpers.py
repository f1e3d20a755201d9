"""The MQTT tests' broker and subscriber: shared with the benchmark, which imports them too.

See :mod:`inspector.tools.benchmark.mosquitto` (Debian's ``mosquitto`` on a free loopback port,
TLS and a password file; a missing broker fails the test, never skips it).
"""

from __future__ import annotations

from inspector.tools.benchmark.mosquitto import (
    PASSWORD,
    USERNAME,
    Mosquitto,
    Received,
    Subscriber,
    free_port,
    start_mosquitto,
)

__all__ = [
    "PASSWORD",
    "USERNAME",
    "Mosquitto",
    "Received",
    "Subscriber",
    "free_port",
    "start_mosquitto",
]
