"""GenICam discovery through Aravis, against its software GigE Vision camera on loopback."""

from __future__ import annotations

import json

import pytest
from genicam_camera import fake_camera

from inspector.cli import main
from inspector.runtime.sources import aravis
from inspector.runtime.sources.aravis import list_devices


@pytest.mark.component  # starts the software GigE camera
def test_inspector_cameras_lists_the_fake_camera(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_camera() as camera:
        assert main(["cameras", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert camera.device.as_dict() in listed
        mine = next(d for d in listed if d["serial"] == camera.device.serial)
        assert mine == {
            "id": f"Aravis-Fake-{camera.device.serial}",
            "vendor": "Aravis",
            "model": "Fake",
            "serial": camera.device.serial,
            "address": "127.0.0.1",
            "protocol": "GigEVision",
        }
        assert main(["cameras"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["id", "vendor", "model", "serial", "address", "protocol"]
        assert any(line.split()[0] == mine["id"] for line in table[1:])
    assert all(d.serial != camera.device.serial for d in list_devices())  # gone when stopped


def test_missing_bindings_are_one_line_naming_the_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gi", None)  # as in a venv without the link
    assert main(["cameras"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bash .ci/ensure-aravis" in err
    assert aravis.ARAVIS_API == "0.8"
