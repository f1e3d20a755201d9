"""The genicam source against Aravis' software GigE Vision camera on loopback.

Pixel formats reach the pipeline as correct BGR (checked against the raw buffers the camera
sent, converted here), software triggers give exactly one frame each, a setting the camera
rejects names its feature, and a camera that disappears is reported and reconnected.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from genicam_camera import fake_camera
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.cli import main
from inspector.errors import ConfigError
from inspector.runtime.config_genicam import GenicamSourceConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.sources import genicam as genicam_module
from inspector.runtime.sources.genicam import GenicamSource
from inspector.runtime.sources.genicam_pixels import to_bgr

# Starts the software GigE camera (arv-fake-gv-camera-0.8): the component tier, not make unit.
pytestmark = pytest.mark.component


def _source(
    device: str, registry: CollectorRegistry | None = None, **settings: Any
) -> GenicamSource:
    config = GenicamSourceConfig(camera_id="cam", device=device, **settings)
    return GenicamSource(config, Metrics(registry or CollectorRegistry()))


def _frames(source: GenicamSource, n: int, timeout: float = 15.0) -> list[np.ndarray]:
    images: list[np.ndarray] = []
    deadline = time.monotonic() + timeout
    while len(images) < n:
        assert time.monotonic() < deadline, f"only {len(images)} of {n} frames"
        images += [f.image for f in source.poll(0.5)]  # type: ignore[union-attr]
    return images


@pytest.mark.parametrize("pixel_format", ["Mono8", "BayerRG8", "BayerGB8"])
def test_frames_reach_the_pipeline_as_correct_bgr(
    pixel_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw: list[tuple[bytes, int, int]] = []

    def recording(data: bytes, width: int, height: int, fmt: str) -> np.ndarray:
        raw.append((data, width, height))
        return to_bgr(data, width, height, fmt)

    monkeypatch.setattr(genicam_module, "to_bgr", recording)
    with fake_camera() as camera:
        source = _source(camera.device.id, pixel_format=pixel_format, region=(0, 0, 128, 96))
        source.setup()
        try:
            images = _frames(source, 3)
        finally:
            source.close()
    assert all(img.shape == (96, 128, 3) and img.dtype == np.uint8 for img in images)
    by_bytes = {bytes(r[0]) for r in raw}
    for image in images:
        # Find the raw buffer this frame came from: the one whose own conversion matches.
        candidates = [np.frombuffer(d, np.uint8, 128 * 96).reshape(96, 128) for d in by_bytes]
        assert any(_matches(image, mosaic, pixel_format) for mosaic in candidates)


def _matches(image: np.ndarray, mosaic: np.ndarray, pixel_format: str) -> bool:
    """The test's own reading of a raw buffer: gray for Mono8; for Bayer, each colour keeps
    the camera's sample at its own sites (bilinear demosaicing only fills the others)."""
    inner = (slice(2, -2), slice(2, -2))
    if pixel_format == "Mono8":
        return all(np.array_equal(image[..., c], mosaic) for c in range(3))
    pattern = pixel_format.removeprefix("Bayer").removesuffix("8")  # e.g. "RG": top-left R, G
    sites = {
        "RG": {"R": (0, 0), "B": (1, 1)},
        "BG": {"B": (0, 0), "R": (1, 1)},
        "GR": {"R": (0, 1), "B": (1, 0)},
        "GB": {"B": (0, 1), "R": (1, 0)},
    }[pattern]
    channel = {"B": 0, "R": 2}
    for colour, (dy, dx) in sites.items():
        mine = image[dy::2, dx::2, channel[colour]][inner]
        camera_sample = mosaic[dy::2, dx::2][inner]
        if not np.array_equal(mine, camera_sample):
            return False
    return True


def test_a_software_trigger_takes_exactly_one_frame() -> None:
    with fake_camera() as camera:
        source = _source(camera.device.id, trigger={"mode": "software"}, region=(0, 0, 64, 48))
        source.setup()
        try:
            time.sleep(0.5)
            assert source.poll(1.0) == []  # nothing without a trigger
            for _ in range(5):
                source.trigger()
                assert len(_frames(source, 1, timeout=5.0)) == 1
                assert source.poll(0.7) == []  # and nothing more per trigger
        finally:
            source.close()


def test_a_setting_the_camera_rejects_names_its_feature(
    tmp_path: Path, checkpoint: LoadedCheckpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_camera() as camera:
        with pytest.raises(ConfigError, match=r"exposure_us: ExposureTime 1e\+09 is outside"):
            _source(camera.device.id, exposure_us=1e9).setup()
        with pytest.raises(ConfigError, match=r"TriggerSource Line7"):
            _source(camera.device.id, trigger={"mode": "line", "line": "Line7"}).setup()
        # Through `inspector run`: exit code 2 with the feature named.
        config = tmp_path / "inspector.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "sources": [
                        {
                            "type": "genicam",
                            "camera_id": "top",
                            "device": camera.device.id,
                            "region": [0, 0, 100000, 10],
                        }
                    ],
                    "model": {"checkpoint": str(checkpoint.path), "device": "cpu"},
                    "sinks": {"kafka": {"enabled": False}},
                    "http": {"host": "127.0.0.1", "port": 0},
                }
            )
        )
        assert main(["run", "--config", str(config)]) == 2
        assert "sources[top].region: Width 100000 is outside" in capsys.readouterr().err


def test_a_camera_that_disappears_is_reported_and_reconnected() -> None:
    registry = CollectorRegistry()
    with fake_camera() as camera:
        serial = camera.device.serial
        source = _source(
            camera.device.id,
            registry,
            region=(0, 0, 64, 48),
            frame_timeout_ms=500,
            reconnect_initial_s=0.2,
            reconnect_max_s=1.0,
        )
        source.setup()
        try:
            _frames(source, 2)
            assert source.ready() and source.unready_reason() is None
            camera.kill()
            wait_until(lambda: not source.ready(), 15, "unready with the camera gone")
            reason = source.unready_reason()
            assert reason is not None and reason.startswith("genicam cam:")
            with fake_camera(serial=serial):
                _frames(source, 2, timeout=30.0)  # back without a restart
                assert source.ready()
        finally:
            source.close()
    reconnects = registry.get_sample_value("inspector_camera_reconnects_total", {"camera": "cam"})
    assert reconnects is not None and reconnects >= 1
