"""JPEG decoding by torchvision (nvJPEG on CUDA): exercised on the CPU, where CI runs.

The same code path decodes on ``cuda`` when ``sources[kafka].decode_device: cuda``; only the
device differs. Frames decoded this way are RGB ``(3, h, w)`` tensors and must give the same
answers as OpenCV-decoded BGR arrays everywhere downstream.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from inspector.config import KafkaConfig, KafkaSourceConfig, ModelConfig, OverlaySinkConfig
from inspector.errors import ConfigError
from inspector.metrics import Metrics
from inspector.model import ReverseDistillation
from inspector.records import Frame, Inspection
from inspector.sinks.overlays import OverlaySink
from inspector.sources.kafka import KafkaSource
from inspector.sources.kafka_records import decode_timed, to_item
from inspector.testing import make_frame, make_result
from inspector.worker import ModelWorker

CPU = torch.device("cpu")


def _jpeg(seed: int = 0, size: tuple[int, int] = (48, 64)) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 255, (*size, 3), dtype=np.uint8), (5, 5), 0)
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    return bytes(data), decoded


def test_jpeg_decodes_to_rgb_tensor_matching_opencv() -> None:
    data, bgr = _jpeg()
    out = decode_timed(data, CPU)
    assert out.error is None and isinstance(out.image, torch.Tensor)
    assert out.image.shape == (3, 48, 64) and out.image.dtype == torch.uint8
    as_bgr = out.image.permute(1, 2, 0).flip(-1).numpy().astype(int)
    # Both are libjpeg-turbo here; nvJPEG may differ by rounding, never by more than a few levels.
    assert np.abs(as_bgr - bgr.astype(int)).max() <= 2


def test_other_formats_and_no_device_use_opencv() -> None:
    data, bgr = _jpeg()
    png = cv2.imencode(".png", bgr)[1].tobytes()
    for value, device in ((png, CPU), (data, None)):
        out = decode_timed(bytes(value), device)
        assert isinstance(out.image, np.ndarray) and out.image.shape == (48, 64, 3)


def test_broken_jpeg_is_an_error_not_an_exception() -> None:
    data, _ = _jpeg()
    out = decode_timed(data[: len(data) // 3], CPU)
    assert out.image is None and out.error


def test_tensor_frames_carry_their_size() -> None:
    data, _ = _jpeg()
    record = SimpleNamespace(offset=7, key=b"cam", value=data, headers=[], timestamp=-1)
    item = to_item(
        "frames",
        0,
        record,
        decode_timed(data, CPU),
        max_message_bytes=10**6,
        received=0.0,
        ack=lambda: None,
    )
    assert isinstance(item, Frame) and item.meta.image_size == (48, 64)
    # The original message rides along, for a dead letter should the frame fail later.
    assert item.raw is not None and (item.raw.value, item.raw.offset) == (data, 7)


def test_worker_gives_the_same_maps_for_tensor_and_array_frames() -> None:
    torch.manual_seed(0)
    model = ReverseDistillation(ModelConfig(backbone="resnet18", image_size=64))
    worker = ModelWorker(model, CPU, Metrics(CollectorRegistry()), warmup_batches=0)
    data, bgr = _jpeg()
    tensor = decode_timed(data, CPU).image
    assert isinstance(tensor, torch.Tensor)
    from_tensor = worker.infer([tensor, tensor])
    from_array = worker.infer([bgr, bgr])
    rgb_exact = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)
    torch.testing.assert_close(worker.infer([rgb_exact]).anomaly_map, from_array.anomaly_map[:1])
    assert (from_tensor.anomaly_map - from_array.anomaly_map).abs().max() < 0.02


def test_overlay_of_a_tensor_frame_equals_the_array_one(tmp_path: Path) -> None:
    _, bgr = _jpeg()
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)
    heat = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    written = []
    for name, image in (("array", bgr), ("tensor", rgb)):
        sink = OverlaySink(
            OverlaySinkConfig(directory=tmp_path / name), Metrics(CollectorRegistry())
        )
        frame = make_frame(bgr, "f1")
        frame = Frame(frame.meta, image, frame.ack)
        written.append(
            sink.write(Inspection(make_result("f1", image_size=(48, 64)), frame, heat, None))
        )
    a, b = (cv2.imread(str(p)) for p in written)
    assert a is not None and b is not None and np.array_equal(a, b)


def test_cuda_decoding_without_a_gpu_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    source = KafkaSource(
        KafkaConfig(), KafkaSourceConfig(decode_device="cuda"), Metrics(CollectorRegistry())
    )
    with pytest.raises(ConfigError, match="decode_device"):
        source.setup()
