"""OpenVINO's tools never send usage telemetry from inspector's process."""

from __future__ import annotations

import sys

import pytest

from inspector.backends.convert import no_telemetry, require
from inspector.backends.openvino import import_openvino


@pytest.mark.parametrize("load", [no_telemetry, import_openvino, lambda: require("nncf", "")])
def test_the_telemetry_module_is_unimportable_before_openvino_tools_load(load: object) -> None:
    # tests/conftest.py blocks it for the whole run: take that away to see the code do it.
    saved = sys.modules.pop("openvino_telemetry", None)
    try:
        load()  # type: ignore[operator]
        assert "openvino_telemetry" in sys.modules
        assert sys.modules["openvino_telemetry"] is None
        with pytest.raises(ImportError):
            import openvino_telemetry  # noqa: F401
    finally:
        sys.modules["openvino_telemetry"] = saved  # type: ignore[assignment]
