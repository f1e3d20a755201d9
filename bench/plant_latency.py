"""Capture-to-PLC latency: from a frame's ``captured_at`` to OPC UA and MQTT subscribers.

The real daemon, one process per rate (``Daemon`` as ``inspector run`` runs it): the demo's two
cameras (camera sources playing videos of the demo's generated parts, which stamp
``captured_at`` as they read each frame) -> batcher -> worker (resnet18, 128 px, seeded
weights) -> post-processing -> the JSON-lines sink, the MQTT sink (TLS, a user, QoS 1, to a
Debian Mosquitto on loopback that the benchmark starts) and the OPC UA server
(``Basic256Sha256`` SignAndEncrypt, a trusted client certificate and a user). An asyncua client
subscribed to every camera's ``FrameId`` and a paho-mqtt client on ``<prefix>/+/result`` note
when each frame's verdict reached them. Two rates: the demo's (each camera a live camera at the
demo's per-camera rate) and saturation (unpaced, every frame). See
:mod:`inspector.tools.benchmark.plant_latency` for how each figure is taken.

Prints one JSON object on stdout (per rate and sink: p50/p95/p99 ms, frames seen vs produced,
OPC UA updates dropped; the daemon's own capture-to-verdict p50/p95/p99 for context), writes
it indented to ``--json`` and its table to the generated ``bench/PERFORMANCE.md``.

Needs the dev install (asyncua and paho-mqtt of the ``plant`` extra, ``trustme`` for the
broker's throw-away CA) and Debian's mosquitto (``.ci/ensure-mosquitto``).

    .venv/bin/python bench/plant_latency.py                    # the full run, a few minutes
    .venv/bin/python bench/plant_latency.py --demo-frames 20 --saturation-frames 40 --no-record
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from inspector.tools.benchmark.plant_latency import PlantSettings, run_bench
from inspector.tools.benchmark.record import (
    add_record_arguments,
    markdown_table,
    run_facts,
    save_json,
    write_section,
)
from inspector.tools.benchmark.retention_windows import Settings, demo_line
from inspector.tools.demo.setup import DEMO_DEADLINE_MS

#: Where the JSON result goes by default: generated, beside the performance file.
DEFAULT_JSON = Path(__file__).resolve().with_name("results") / "plant_latency.json"


def _arguments() -> argparse.Namespace:
    demo, daemon = demo_line()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--demo-frames", type=int, default=600, help="frames at the demo's rate, all cameras"
    )
    parser.add_argument(
        "--saturation-frames", type=int, default=1200, help="frames unpaced, all cameras"
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--deadline-ms",
        type=int,
        default=DEMO_DEADLINE_MS,
        help="every camera's deadline_ms (Late); default: the demo's, %(default)s",
    )
    parser.add_argument(
        "--min-publishing-interval-ms",
        type=int,
        default=20,
        help="sinks.opcua.min_publishing_interval_ms (the client asks for 0); default: "
        "the sink's, %(default)s",
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where frames, videos and runs go (default: a temp folder)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0)
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    if min(args.demo_frames, args.saturation_frames) < demo.cameras:
        parser.error("each rate needs at least one frame a camera")
    args.demo = demo
    args.daemon = daemon
    return args


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _table(rates: dict[str, Any]) -> str:
    rows = [("rate", "sink", "p50 ms", "p95 ms", "p99 ms", "seen / produced", "dropped", "late")]
    for rate, figures in rates.items():
        for sink, f in figures["sinks"].items():
            rows.append(
                (
                    rate,
                    sink,
                    _ms(f["p50_ms"]),
                    _ms(f["p95_ms"]),
                    _ms(f["p99_ms"]),
                    f"{f['seen']} / {f['produced']}",
                    f"{f['updates_dropped']:.0f}" if sink == "opcua" else "-",
                    f"{f['late']:.0f}",
                )
            )
        verdict = figures["capture_to_verdict"]
        rows.append(
            (
                rate,
                "(verdict made)",
                _ms(verdict["p50_ms"]),
                _ms(verdict["p95_ms"]),
                _ms(verdict["p99_ms"]),
                f"{verdict['n']} / {figures['produced']}",
                "-",
                "-",
            )
        )
    return markdown_table(rows)


def main() -> int:
    args = _arguments()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # asyncua's client warns of revised session settings, which are the server's to revise.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="inspector-plant-") as tmp:
        line = Settings(
            pairs=1,
            demo_frames=args.demo_frames,
            saturation_frames=args.saturation_frames,
            cameras=args.demo.cameras,
            fps_per_camera=args.demo.fps / args.demo.cameras,
            image_size=args.demo.image_size,
            frame_size=args.demo.frame_size,
            precision=args.precision,
            daemon=args.daemon,
            work=(args.work_dir or Path(tmp)) / "plant-bench",
            seed=args.seed,
        )
        settings = PlantSettings(line, args.deadline_ms, args.min_publishing_interval_ms)
        measured = run_bench(settings)
    shown = {
        k: v
        for k, v in dataclasses.asdict(line).items()
        if k in ("cameras", "fps_per_camera", "backbone", "image_size", "frame_size", "seed")
    }
    rates = measured["rates"]
    result: dict[str, Any] = {
        "benchmark": "plant_latency",
        "settings": {
            **shown,
            "precision": line.precision,
            "frames": {rate: figures["frames"] for rate, figures in rates.items()},
            "deadline_ms": settings.deadline_ms,
            "batcher": args.daemon["batcher"],
            "warmup_batches": args.daemon["warmup_batches"],
            "weights": "seeded random (as weights: none)",
            "sources": "camera sources playing MJPEG videos of the demo's generated 256 px "
            "parts; captured_at stamped as each frame is read (demo: live at the demo's "
            "rate, stale frames dropped; saturation: every frame, 4-frame read-ahead)",
            "opcua": "Basic256Sha256 SignAndEncrypt, trusted client certificate, user + "
            "password; the client subscribes to each camera's FrameId (every served value), "
            f"asks for a 0 ms publishing interval, the server revises it to "
            f"{settings.min_publishing_interval_ms} ms",
            "mqtt": "local Debian mosquitto on loopback, TLS (throw-away CA) + password "
            "file; sink at QoS 1; subscriber on <prefix>/+/result at QoS 1",
            "latency": "arrival at the subscriber (epoch s, same machine) - captured_at",
        },
        "rates": rates,
        "wall_s": measured["wall_s"],
        **run_facts(),
    }
    print(json.dumps(result))
    if not args.no_record:
        shown_json = save_json(args.json, result)
        write_section(
            args.record,
            "plant_latency",
            "Capture-to-PLC latency through the daemon: OPC UA and MQTT subscribers "
            f"(resnet18, {line.image_size} px, {line.precision}, cpu)",
            "Each rate is one daemon process: the demo's "
            f"{line.cameras} cameras (videos of generated frames; `captured_at` stamped as "
            "each is read), the MQTT sink to a local Mosquitto (TLS, QoS 1) and the OPC UA "
            "server (Basic256Sha256 SignAndEncrypt, a user); an asyncua client subscribed to "
            "every camera's `FrameId` and a paho-mqtt client on `<prefix>/+/result` note when "
            "each verdict reached them. Latency: that moment less `captured_at`. `demo`: each "
            f"camera live at {line.fps_per_camera:g} frames/s; `saturation`: unpaced, every "
            "frame. `dropped`: `inspector_opcua_updates_dropped_total` (latest-value "
            "semantics); `late`: past the deadline of "
            f"{settings.deadline_ms} ms by the daemon's count; `(verdict made)`: the "
            "daemon's own capture to `processed_at`.\n\n"
            + _table(rates)
            + f"\nThe whole result: `{shown_json}`.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
