"""End-to-end throughput over Kafka (frames topic -> daemon -> results topic) vs model only.

Starts the embedded broker, writes a checkpoint with random weights (speed does not depend on
the weights), produces N JPEG frames, runs the real daemon in-process and times from the first
result to the last; then times the model alone on the same frames at the same batch size.
Prints one JSON object per backbone.

    .venv/bin/python bench/e2e_kafka.py --backbone resnet18 wide_resnet50_2 --frames 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import torch
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from inspector.broker import EmbeddedBroker
from inspector.checkpoint import CheckpointMeta, save_checkpoint
from inspector.config import InspectorConfig, ModelConfig
from inspector.daemon import Daemon
from inspector.metrics import Metrics
from inspector.model import ReverseDistillation
from inspector.records import Calibration
from inspector.synth import add_defect, render_good
from inspector.worker import ModelWorker


def _frames(n: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = render_good(rng, size, "metal")
        if i % 4 == 0:
            image, _ = add_defect(rng, image, "scratch")
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def _checkpoint(folder: Path, backbone: str, size: int) -> Path:
    torch.manual_seed(0)
    model = ReverseDistillation(ModelConfig(backbone=backbone, image_size=size))
    cal = Calibration(
        mode="good_only",
        image_threshold=1.0,
        image_min=0.5,
        image_max=1.5,
        pixel_threshold=1.0,
        pixel_min=0.0,
        pixel_max=1.5,
    )
    path = folder / f"{backbone}.safetensors"
    save_checkpoint(
        path, model, CheckpointMeta(name=f"bench-{backbone}", model=model.config, calibration=cal)
    )
    return path


def model_only(ckpt_model: ReverseDistillation, frames: list[bytes], batch: int) -> float:
    worker = ModelWorker(
        ckpt_model,
        torch.device("cpu"),
        Metrics(CollectorRegistry()),
        warmup_batches=1,
        max_batch_size=batch,
    )
    worker.warm_up()
    images = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in frames]
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        worker.infer(images[i : i + batch])
    return len(images) / (time.perf_counter() - t0)


def end_to_end(bootstrap: str, ckpt: Path, frames: list[bytes], batch: int) -> float:
    tag = uuid.uuid4().hex[:8]
    topics = {
        "frames_topic": f"b{tag}.frames",
        "results_topic": f"b{tag}.results",
        "dlq_topic": f"b{tag}.dlq",
        "group_id": f"b{tag}",
    }
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(topics[k], 1, 1) for k in ("frames_topic", "results_topic", "dlq_topic")]
    )
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i, frame in enumerate(frames):
        producer.send(topics["frames_topic"], frame, key=f"cam-{i % 4}".encode())
    producer.flush()
    producer.close()
    config = InspectorConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                **topics,
            },
            "sources": [{"type": "kafka", "decode_threads": 2}],
            "model": {"checkpoint": str(ckpt), "device": "cpu", "warmup_batches": 1},
            "batcher": {"max_batch_size": batch, "max_wait_ms": 20},
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topics["results_topic"], 0)
    daemon = Daemon(config, registry=CollectorRegistry())
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        while not (daemon.pipeline and daemon.pipeline.worker.ready):
            time.sleep(0.05)
        seen, first, last = 0, 0.0, 0.0
        deadline = time.monotonic() + 1800
        while seen < len(frames) and time.monotonic() < deadline:
            if not consumer.assignment():
                consumer.assign([tp])
                consumer.seek_to_beginning(tp)
            for records in consumer.poll(timeout_ms=200).values():
                now = time.perf_counter()
                first = first or now
                seen += len(records)
                last = now
    finally:
        daemon.request_exit()
        thread.join()
        consumer.close()
    # From the first result to the last: the steady state, without start-up and warm-up.
    return (seen - 1) / (last - first) if seen > 1 and last > first else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", nargs="+", default=["resnet18", "wide_resnet50_2"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=64)
    args = parser.parse_args()
    frames = _frames(args.frames, args.image_size)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        for backbone in args.backbone:
            ckpt = _checkpoint(Path(tmp), backbone, args.image_size)
            e2e = end_to_end(broker.bootstrap, ckpt, frames, args.batch_size)
            torch.manual_seed(0)
            model = ReverseDistillation(ModelConfig(backbone=backbone, image_size=args.image_size))
            alone = model_only(model, frames, args.batch_size)
            print(
                json.dumps(
                    {
                        "backbone": backbone,
                        "image_size": args.image_size,
                        "batch_size": args.batch_size,
                        "frames": args.frames,
                        "threads": torch.get_num_threads(),
                        "e2e_frames_per_s": round(e2e, 3),
                        "model_only_frames_per_s": round(alone, 3),
                        "ratio": round(e2e / alone, 3),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
