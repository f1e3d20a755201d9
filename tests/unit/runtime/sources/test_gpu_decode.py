"""JPEG decoding by torchvision (nvJPEG on CUDA): exercised on the CPU, where CI runs.

The same code path decodes on ``cuda`` when ``sources[kafka].decode_device: cuda``; only the
device differs. Frames decoded this way are RGB ``(3, h, w)`` tensors and must give the same
answers as OpenCV-decoded BGR arrays everywhere downstream.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from fakes import make_frame, make_result
from prometheus_client import CollectorRegistry
from torchvision.io import decode_jpeg

from inspector.errors import ConfigError
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import KafkaConfig, KafkaSourceConfig, OverlaySinkConfig
from inspector.runtime.kafka import consumed as kafka_records
from inspector.runtime.kafka.consumed import decode_timed, to_item
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Frame, Inspection
from inspector.runtime.sinks.overlays import OverlaySink
from inspector.runtime.sources.kafka import KafkaSource
from inspector.runtime.worker import ModelWorker

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
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64))
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


def test_a_poll_of_jpegs_is_decoded_in_one_torchvision_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def counting(encoded: torch.Tensor | list[torch.Tensor], **kwargs: object) -> object:
        calls.append(len(encoded) if isinstance(encoded, list) else 1)
        return decode_jpeg(encoded, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kafka_records, "decode_jpeg", counting)
    jpegs = [_jpeg(seed)[0] for seed in range(3)]
    out = kafka_records.decode_jpegs(jpegs, CPU)
    assert calls == [3]
    for data, outcome in zip(jpegs, out, strict=True):
        alone = decode_timed(data, CPU).image
        assert isinstance(outcome.image, torch.Tensor) and isinstance(alone, torch.Tensor)
        assert torch.equal(outcome.image, alone) and outcome.error is None


def test_one_bad_jpeg_in_a_batch_spoils_only_itself() -> None:
    good = [_jpeg(seed)[0] for seed in range(2)]
    truncated = good[0][: len(good[0]) // 2]
    garbage = b"\xff\xd8\xff" + bytes(200) + b"\xff\xd9"
    out = kafka_records.decode_jpegs([good[0], truncated, good[1], garbage], CPU)
    assert [o.image is not None for o in out] == [True, False, True, False]
    assert out[1].error is not None and "truncated" in out[1].error
    assert out[3].error
    for data, outcome in zip(good, (out[0], out[2]), strict=True):
        assert isinstance(outcome.image, torch.Tensor)
        assert torch.equal(outcome.image, decode_timed(data, CPU).image)  # type: ignore[arg-type]


def test_a_jpeg_torchvision_refuses_is_decoded_by_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    # nvJPEG lacks some JPEG variants OpenCV reads: such a frame must not become a dead letter.
    def refusing(encoded: object, **kwargs: object) -> object:
        raise RuntimeError("unsupported JPEG variant")

    monkeypatch.setattr(kafka_records, "decode_jpeg", refusing)
    data, bgr = _jpeg()
    out = kafka_records.decode_jpegs([data, data], CPU)
    for outcome in out:
        assert isinstance(outcome.image, np.ndarray) and np.array_equal(outcome.image, bgr)


def test_decode_values_keeps_order_and_splits_jpeg_from_other_formats() -> None:
    data, bgr = _jpeg(0)
    data2, _ = _jpeg(1)
    png = cv2.imencode(".png", bgr)[1].tobytes()
    values = [data, None, bytes(png), data2, b"not an image"]
    with ThreadPoolExecutor(2) as pool:
        on_cpu = kafka_records.decode_values(values, pool, None)
        on_device = kafka_records.decode_values(values, pool, CPU)
    assert on_cpu[1] is None and on_device[1] is None
    kinds = [type(o.image) if o is not None else None for o in on_device]
    assert kinds == [torch.Tensor, None, np.ndarray, torch.Tensor, type(None)]
    assert all(isinstance(o.image, np.ndarray) for o in (on_cpu[0], on_cpu[2], on_cpu[3]) if o)
    assert on_device[4] is not None and on_device[4].error
    assert on_device[0] is not None and on_device[3] is not None
    assert not torch.equal(on_device[0].image, on_device[3].image)  # type: ignore[arg-type]


def test_truncated_jpeg_is_refused_before_torchvision_sees_it() -> None:
    data, _ = _jpeg()
    out = decode_timed(data[:-100], CPU)
    assert out.image is None and out.error is not None and "truncated" in out.error
