"""``inspector demo``: the whole line on one machine, with nothing to set up by hand.

Synthetic line (cached) -> small model trained once (cached) -> embedded Kafka-protocol broker
(Tansu) -> the real daemon (Kafka source, Kafka/JSONL/overlay sinks, /metrics) -> simulated
cameras publishing frames -> a live view of the results and dead-letter topics. Ctrl+C (or
``--frames N`` accounted for) shuts everything down in order: cameras, daemon drain, broker.

Besides the regular cameras, a high-resolution camera (1024 x 768, unless ``--no-hires``) has
a line and a model of its own: the daemon cuts its frames into 128 px tiles at native
resolution (``cameras.line1-hires.tiling``), so its small defects are not resized away.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console
from rich.live import Live

from inspector.logs import LOG_FORMAT, EscapingFormatter
from inspector.messages import ResultMessage
from inspector.runtime.config import KafkaConfig
from inspector.runtime.daemon import Daemon
from inspector.tools.broker import EmbeddedBroker, create_topics
from inspector.tools.demo.cameras import DemoCameras, demo_cameras
from inspector.tools.demo.setup import (
    HIRES_CAMERA,
    HIRES_HEIGHT,
    HIRES_PERIOD_S,
    HIRES_WIDTH,
    RETAINED_DIR,
    STALL_TIMEOUT_S,
    DemoError,
    DemoOptions,
    DemoSummary,
    demo_config,
    demo_hires_model,
    demo_model,
    hires_description,
    port_or_free,
)
from inspector.tools.demo.simulator import LineImage, describe, load_line, synthetic_line
from inspector.tools.demo.view import LineTally, render

log = logging.getLogger(__name__)


@contextmanager
def _quiet_console_logs(logfile: Path) -> Iterator[None]:
    """Send logs to ``logfile`` while the live view owns the terminal (errors still show)."""
    root = logging.getLogger()
    # One run per file: the log of this run only, not every run since the folder was made.
    handler = logging.FileHandler(logfile, mode="w")
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    saved = [(h, h.level) for h in root.handlers]
    for h, _ in saved:
        h.setLevel(logging.ERROR)
    root.addHandler(handler)
    old_level, root.level = root.level, min(root.level or logging.INFO, logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.level = old_level
        for h, level in saved:
            h.setLevel(level)


class _Stopper:
    """Ctrl+C/SIGTERM: the first stops the line and drains, the second skips the drain."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.daemon: Daemon | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        if self.stop.is_set() and self.daemon is not None:
            self.daemon.force_exit = True
        self.stop.set()
        if self.daemon is not None:
            self.daemon.request_exit()

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals can only be handled on the main thread; tests call from others
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_demo(opts: DemoOptions, console: Console | None = None) -> DemoSummary:
    """Run the demo line until ``opts.frames`` are accounted for or Ctrl+C.

    Returns:
        What was sent and seen.

    Raises:
        BrokerError: The embedded broker is not installed or does not start.
        DemoError: The daemon failed, or frames stopped arriving.
    """
    console = console or Console(soft_wrap=True)
    live = console.is_terminal if opts.live is None else opts.live
    opts.workdir.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]inspector demo[/] in {opts.workdir.resolve()}")
    # 90 good parts, 30% held out: enough good scores to place the threshold at a low false
    # alarm rate (with a handful, the threshold is the largest of a few and every fifth good
    # part would be flagged).
    images = synthetic_line(
        opts.workdir / "line", image_size=opts.frame_size, seed=opts.seed, n_train=90
    )
    console.print(f"line: {len(images)} test parts {describe(images)}")
    checkpoint = demo_model(opts, opts.workdir / "line", console)
    hires_images, hires_checkpoint = _hires_line(opts, console) if opts.hires else ([], None)
    # Outputs of the previous run would mix with this one's counts; its retained frames share
    # this run's frame ids (they start at 0 each run), which retention never writes twice.
    for folder in ("overlays", RETAINED_DIR):
        shutil.rmtree(opts.workdir / folder, ignore_errors=True)
    for name in ("results.jsonl", "results.dlq.jsonl"):
        (opts.workdir / name).unlink(missing_ok=True)
    stopper = _Stopper()
    with (
        _quiet_console_logs(opts.workdir / "demo.log"),
        stopper.installed(),
        _broker(opts) as bootstrap,
    ):
        run_id = None if opts.bootstrap_servers is None else uuid.uuid4().hex[:8]
        port = port_or_free(opts.port)
        config = demo_config(
            opts, bootstrap, checkpoint, port, run_id, hires_checkpoint, _admin_token()
        )
        kafka = config.kafka
        # Two frame partitions: cameras spread over them by key, and room for a second daemon
        # in the group.
        create_topics(
            kafka.bootstrap_servers,
            {kafka.frames_topic: 2, kafka.results_topic: 1, kafka.dlq_topic: 1},
        )
        daemon = Daemon(config)
        stopper.daemon = daemon
        return _run_line(
            opts, console, live, daemon, stopper, demo_cameras(opts, images, hires_images)
        )


def _admin_token() -> str:
    """The console's token for labels: ``INSPECTOR_HTTP__ADMIN_TOKEN``, or a fresh one per run.

    The demo builds its configuration itself (the environment does not reach it), and without
    a token the console could show flagged frames but not label them.
    """
    return os.environ.get("INSPECTOR_HTTP__ADMIN_TOKEN") or secrets.token_urlsafe(18)


def console_lines(port: int, admin_token: str | None) -> list[str]:
    """What the demo prints once the daemon is ready: where its console, metrics and health are.

    Args:
        port: The daemon's HTTP port (on loopback).
        admin_token: ``http.admin_token``, which the console asks for before the first label.
    """
    base = f"http://127.0.0.1:{port}"
    lines = [
        f"daemon ready; operator console: {base}/  metrics: {base}/metrics  "
        "health: .../healthz, .../readyz"
    ]
    if admin_token is not None:
        lines.append(f"  to label frames there, give the console the admin token {admin_token}")
    return lines


def _hires_line(opts: DemoOptions, console: Console) -> tuple[list[LineImage], Path]:
    """The high-resolution camera's line (generated once) and its tiled model (trained once)."""
    from inspector.tools.synth.highres import ensure_highres_line

    data = opts.workdir / "line-hires"
    started = time.monotonic()
    _, generated = ensure_highres_line(data, width=HIRES_WIDTH, height=HIRES_HEIGHT, seed=opts.seed)
    if generated:
        console.print(f"generated the high-resolution line in {time.monotonic() - started:.0f} s")
    images = load_line(data)
    console.print(f"high-resolution line ({hires_description()}): {describe(images)}")
    return images, demo_hires_model(opts, data, console)


@contextmanager
def _broker(opts: DemoOptions) -> Iterator[str]:
    if opts.bootstrap_servers is not None:
        yield opts.bootstrap_servers
        return
    with EmbeddedBroker(log_path=opts.workdir / "broker.log") as broker:
        yield broker.bootstrap


def _run_line(
    opts: DemoOptions,
    console: Console,
    live: bool,
    daemon: Daemon,
    stopper: _Stopper,
    cameras: DemoCameras,
) -> DemoSummary:
    failure: list[BaseException | str] = []

    def run_daemon() -> None:
        try:
            if daemon.run() != 0:
                failure.append("it stopped with errors")
        except BaseException as exc:  # reported on the main thread
            failure.append(exc)
        finally:
            stopper.stop.set()

    port = daemon.config.http.port
    kafka = daemon.config.kafka
    bootstrap = kafka.bootstrap_servers
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    console_url = f"http://127.0.0.1:{port}/"
    thread = threading.Thread(target=run_daemon, name="daemon", daemon=True)
    thread.start()
    console.print("starting the daemon (model warm-up, Kafka group join) ...")
    wait_until_ready(f"http://127.0.0.1:{port}/readyz", stopper.stop, console)
    if failure:
        thread.join()
        raise DemoError(f"the daemon did not start: {failure[0]} (log: {opts.workdir}/demo.log)")
    token = daemon.config.http.admin_token
    for line in console_lines(port, None if token is None else token.get_secret_value()):
        console.print(line, highlight=False, markup=False)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    featured = {HIRES_CAMERA: hires_description()} if HIRES_CAMERA in cameras.cameras else {}
    tally = LineTally(truth=cameras.truth, sent=lambda: cameras.count, featured=featured)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(kafka.results_topic, 0), TopicPartition(kafka.dlq_topic, 0)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)  # fresh topics: everything on them is this run's
    cameras.start(producer, kafka.frames_topic, stopper.stop)
    header = f"inspector demo: {opts.cameras} cameras at {opts.fps:g} frames/s"
    if featured:
        header += f" + {HIRES_CAMERA} every {HIRES_PERIOD_S:g} s"
    header += f"   console {console_url}"
    try:
        _watch(opts, console, live, consumer, kafka, tally, stopper, header)
    finally:
        stopper.stop.set()
        cameras.join(timeout=35)
        producer.close(timeout=5)
        console.print("stopping: draining the daemon ...")
        daemon.request_exit()
        thread.join(timeout=daemon.config.daemon.drain_timeout_s + 15)
        consumer.close()
    if failure:
        raise DemoError(f"the daemon failed: {failure[0]} (log: {opts.workdir}/demo.log)")
    summary = DemoSummary(
        sent=cameras.sent(),
        tally=tally,
        metrics_url=metrics_url,
        overlays=opts.workdir / "overlays",
        results_file=opts.workdir / "results.jsonl",
    )
    if opts.frames is not None and tally.total < opts.frames:
        raise DemoError(
            f"only {tally.total} of {opts.frames} frames came back "
            f"(log: {opts.workdir}/demo.log, broker log: {opts.workdir}/broker.log)"
        )
    return summary


def wait_until_ready(readyz: str, stop: threading.Event, console: Console) -> None:
    """Wait until the daemon's ``/readyz`` answers 200 (or ``stop`` is set), saying why not.

    The cameras start only then: a frame sent while the Kafka consumer still waits for its
    partitions would sit in the topic and reach its verdict late.

    Args:
        readyz: The daemon's ``/readyz`` URL.
        stop: Set when the demo stops (Ctrl+C, or the daemon ended).
        console: Where each new reason is printed, once.
    """
    said: set[str] = set()
    while not stop.wait(0.1):
        status, reasons = _readyz(readyz)
        if status == 200:
            return
        for reason in reasons:
            shape = re.sub(r"\d+", "#", reason)  # a countdown in a reason is not news
            if shape not in said:
                said.add(shape)
                console.print(f"  not ready yet: {reason}", highlight=False)


def _readyz(url: str) -> tuple[int, list[str]]:
    """``(status, reasons)`` of one ``/readyz`` request; ``(0, [])`` while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, []
    except urllib.error.HTTPError as exc:
        try:
            reasons = json.loads(exc.read()).get("reasons", [])
        except ValueError:
            reasons = []
        return exc.code, [str(r) for r in reasons]
    except (urllib.error.URLError, OSError):
        return 0, []


def _watch(
    opts: DemoOptions,
    console: Console,
    live: bool,
    consumer: KafkaConsumer,
    kafka: KafkaConfig,
    tally: LineTally,
    stopper: _Stopper,
    header: str,
) -> None:
    """Fold the results and dead-letter topics into ``tally`` and show it until done."""
    last_progress = last_print = time.monotonic()
    printed = 0
    # Transient: the view is cleared on exit (no second border left in the scrollback); the
    # summary that follows is printed once, plainly.
    view = (
        Live(
            render(tally, header, console.size.height),
            console=console,
            refresh_per_second=4,
            transient=True,
        )
        if live
        else None
    )
    with view if view is not None else nullcontext():
        while not stopper.stop.is_set():
            for tp, records in consumer.poll(timeout_ms=250).items():
                for record in records:
                    last_progress = time.monotonic()
                    if tp.topic != kafka.dlq_topic:
                        tally.add_result(ResultMessage.from_json(record.value))
                    else:
                        headers = dict(record.headers or [])
                        tally.add_dead_letter(headers.get("error", b"?").decode(errors="replace"))
            now = time.monotonic()
            if view is not None:
                view.update(render(tally, header, console.size.height))
            elif now - last_print >= 2.0 and tally.total != printed:
                console.print(tally.summary(), highlight=False)
                last_print, printed = now, tally.total
            if opts.frames is not None and tally.total >= opts.frames:
                return
            if opts.frames is not None and now - last_progress > STALL_TIMEOUT_S:
                return
