"""The kafka-python the package imports from is the pinned one, and has every name it imports.

``pyproject.toml`` once allowed ``kafka-python>=2.2`` while the code imported names that exist
only in 3.x: a valid install failed at import. These checks run without a broker; what the
private hooks do is checked against the real client in
``tests/integration/test_kafka_client_contract.py``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import tomllib
from pathlib import Path

from inspector.runtime.kafka.client_hooks import WRITTEN_FOR

REPO = Path(__file__).resolve().parents[4]
PACKAGE = REPO / "inspector"


def _kafka_imports() -> set[tuple[str, str | None]]:
    """``(module, name)`` of each ``from kafka... import name`` (``import kafka...``: None)."""
    found: set[tuple[str, str | None]] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "kafka" or node.module.startswith("kafka."):
                    found.update((node.module, alias.name) for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(
                    (alias.name, None)
                    for alias in node.names
                    if alias.name == "kafka" or alias.name.startswith("kafka.")
                )
    return found


def test_every_name_imported_from_kafka_exists_in_the_installed_client() -> None:
    imports = _kafka_imports()
    # The scan itself must see what the package is known to use, or it proves nothing.
    assert ("kafka", "AsyncConsumerRebalanceListener") in imports
    assert ("kafka.structs", "MemberState") in imports
    assert ("kafka.net.transport", "KafkaTCPTransport") in imports
    missing = []
    for module_name, name in sorted(imports, key=lambda i: (i[0], i[1] or "")):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing.append(f"import {module_name}: {exc}")
            continue
        if name is not None and not hasattr(module, name):
            try:  # ``from kafka import admin``: a submodule not yet loaded
                importlib.import_module(f"{module_name}.{name}")
            except ImportError:
                missing.append(f"from {module_name} import {name}")
    assert not missing, f"kafka-python {importlib.metadata.version('kafka-python')}: {missing}"


def test_the_installed_client_is_the_pinned_one_the_hooks_are_written_for() -> None:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in dependencies if re.match(r"kafka-python\b", d)]
    assert len(pins) == 1, pins
    exact = re.fullmatch(r"kafka-python(\[[a-z0-9,]*\])?==(?P<version>[0-9.]+)", pins[0])
    assert exact is not None, f"kafka-python must be pinned exactly (==), not {pins[0]!r}"
    assert exact["version"] == WRITTEN_FOR
    assert importlib.metadata.version("kafka-python") == WRITTEN_FOR
    import kafka

    assert kafka.__version__ == WRITTEN_FOR
