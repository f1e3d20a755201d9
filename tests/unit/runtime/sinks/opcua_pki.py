"""Certificates for the OPC UA tests: the daemon's, a trusted client's and a stranger's.

Made by :mod:`inspector.tools.benchmark.opcua_pki` (shared with the benchmark) for the tests'
application URIs.
"""

from __future__ import annotations

from pathlib import Path

from inspector.tools.benchmark.opcua_pki import Identity, Pki, identity
from inspector.tools.benchmark.opcua_pki import make_pki as _make_pki

SERVER_URI = "urn:inspector:test-daemon"
CLIENT_URI = "urn:inspector:test-plc"


def make_pki(root: Path) -> Pki:
    """Write every certificate the tests use under ``root``."""
    return _make_pki(root, SERVER_URI, CLIENT_URI)


__all__ = ["CLIENT_URI", "SERVER_URI", "Identity", "Pki", "identity", "make_pki"]
