"""The daemon: builds every component, owns the lifecycle (startup, main loop, drain).

Like uvicorn: startup, then a main loop that watches ``should_exit``, then a drain bounded by
``daemon.drain_timeout_s``. The first SIGTERM/SIGINT drains (stop fetching, finish in-flight
frames, flush, commit, exit 0); a second one forces exit without waiting.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from prometheus_client import CollectorRegistry

from inspector.checkpoint import load_checkpoint
from inspector.config import InspectorConfig
from inspector.errors import BrokerUnavailableError, ConfigError
from inspector.messages import ModelRef
from inspector.metrics import Metrics
from inspector.model.device import resolve_device
from inspector.model.runtime import RuntimeOptions, in_passing_thread
from inspector.pipeline import Pipeline
from inspector.postprocess import Postprocessor
from inspector.server import HealthServer
from inspector.sinks.base import Sink
from inspector.sources import build_source
from inspector.sources.base import Source
from inspector.worker import ModelWorker

log = logging.getLogger(__name__)

#: Backoff while the broker is unreachable at start-up (seconds).
_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 30.0


def build_sinks(config: InspectorConfig, metrics: Metrics) -> list[Sink]:
    """The sinks the config enables."""
    sinks: list[Sink] = []
    if config.sinks.kafka.enabled:
        from inspector.sinks.kafka import KafkaSink

        sinks.append(KafkaSink(config.kafka, metrics))
    if config.sinks.jsonl.path is not None:
        from inspector.sinks.jsonl import JsonlSink

        sinks.append(JsonlSink(config.sinks.jsonl, metrics))
    if config.sinks.overlays.directory is not None:
        from inspector.sinks.overlays import OverlaySink

        sinks.append(OverlaySink(config.sinks.overlays, metrics))
    return sinks


class Daemon:
    """One inspection daemon.

    Args:
        config: The whole configuration.
        registry: Metrics registry (a fresh one by default; tests inject theirs).
    """

    def __init__(
        self, config: InspectorConfig, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.should_exit = threading.Event()
        self.force_exit = False
        self.pipeline: Pipeline | None = None
        self.server: HealthServer | None = None
        # Components built but not yet owned by a running pipeline: closed here on failure.
        self._unstarted: list[Source | Sink] = []
        self.model_label = "(none)"
        self._waiting_for: str | None = None
        self._reload_requested = threading.Event()
        self._reloader: threading.Thread | None = None

    # --- signals ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: first drains, second forces; SIGHUP reloads the model (main thread)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle_signal)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())

    def request_reload(self) -> None:
        """Ask the main loop to reload the model in the background (thread-safe)."""
        self._reload_requested.set()

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.should_exit.is_set():
            log.warning(
                "second %s: exiting without waiting for in-flight frames",
                signal.Signals(signum).name,
            )
            self.force_exit = True
        else:
            log.info("%s: draining (send again to force)", signal.Signals(signum).name)
        self.request_exit()

    def request_exit(self) -> None:
        """Ask the main loop to drain and stop (thread-safe)."""
        self.should_exit.set()

    # --- lifecycle ---------------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Reasons the daemon is not ready; empty when it is."""
        if self.pipeline is None:
            return [self._waiting_for or "starting"]
        if self.should_exit.is_set():
            return ["shutting down"]
        return self.pipeline.readiness_reasons()

    def startup(self) -> None:
        """Serve health, load and warm the model, connect sources and sinks, start threads.

        Raises:
            InspectorError: A component cannot start (message says why and what to do).
        """
        cfg = self.config
        self.server = HealthServer(
            cfg.http.host, cfg.http.port, self.registry, self.readiness, self.metrics
        )
        self.server.start()
        worker, postprocessor = self._load_model()
        sources = [build_source(s, cfg.kafka, self.metrics) for s in cfg.sources]
        sinks = build_sinks(cfg, self.metrics)
        self._unstarted = [*sinks, *sources]
        for component in self._unstarted:
            self._set_up(component)
        if self.should_exit.is_set():  # asked to stop while waiting for the broker
            return
        self.pipeline = Pipeline(sources, cfg.batcher, worker, postprocessor, sinks, self.metrics)
        self.pipeline.start()
        self._unstarted = []
        log.info(
            "inspector running: model %s on %s, %d source(s), %d sink(s), http :%d",
            self.model_label,
            worker.device,
            len(sources),
            len(sinks),
            self.server.port,
        )

    def _set_up(self, component: Source | Sink) -> None:
        """Set a component up; while its broker is unreachable, wait and retry.

        A plant's broker may come up after the daemon (power-on, maintenance): the daemon
        stays alive (``/healthz`` 200, ``/readyz`` 503 "waiting for kafka") instead of
        exiting, retrying with exponential backoff until it connects or is told to stop.
        """
        delay = _RETRY_FIRST_S
        while not self.should_exit.is_set():
            try:
                component.setup()
                self._waiting_for = None
                return
            except BrokerUnavailableError as exc:
                self._waiting_for = f"waiting for kafka ({component.name})"
                log.warning("%s; retrying in %.0f s", exc, delay)
                self.should_exit.wait(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    def _load_model(self) -> tuple[ModelWorker, Postprocessor]:
        """Load, check and warm up the configured checkpoint; publish its info and thresholds.

        The torch work runs on a thread that ends with it, so that only the inference thread
        keeps an OpenMP team (see :func:`inspector.model.runtime.in_passing_thread`).

        Raises:
            InspectorError: No checkpoint configured, or it cannot be loaded.
        """
        return in_passing_thread(self._load_and_warm)

    def _load_and_warm(self) -> tuple[ModelWorker, Postprocessor]:
        cfg = self.config
        if cfg.model.checkpoint is None:
            raise ConfigError(
                "model.checkpoint: no checkpoint configured (set INSPECTOR_MODEL__CHECKPOINT)"
            )
        try:
            loaded = load_checkpoint(cfg.model.checkpoint)
            device = resolve_device(cfg.model.device)
            meta = loaded.meta
            model_ref = ModelRef(
                name=meta.name, backbone=meta.model.backbone, checkpoint_sha256=loaded.sha256
            )
            postprocessor = Postprocessor(meta.calibration, model_ref, cfg.postprocess)
            worker = ModelWorker(
                loaded.model,
                device,
                self.metrics,
                warmup_batches=cfg.model.warmup_batches,
                max_batch_size=cfg.batcher.max_batch_size,
                runtime=RuntimeOptions(
                    precision=cfg.model.precision,
                    channels_last=cfg.model.channels_last,
                    compile=cfg.model.compile,
                    cuda_graphs=cfg.model.cuda_graphs,
                ),
                map_filter=postprocessor.needs_map,
            )
            worker.warm_up()
        except Exception:
            self.metrics.model_reloads.labels(result="failure").inc()
            raise
        self.metrics.model_reloads.labels(result="success").inc()
        self.metrics.model_info.info(
            {
                "name": meta.name,
                "backbone": meta.model.backbone,
                "device": str(device),
                "checkpoint_sha256": loaded.sha256,
            }
        )
        self.metrics.threshold.labels(kind="image").set(postprocessor.threshold.image)
        self.metrics.threshold.labels(kind="pixel").set(postprocessor.threshold.pixel)
        self.model_label = f"{meta.name} ({meta.model.backbone}, sha256 {loaded.sha256[:12]})"
        return worker, postprocessor

    def reload_model(self) -> bool:
        """Load the configured checkpoint again and switch to it without stopping.

        Frames keep flowing through the old model while the new one loads and warms up; on
        failure the old model stays in service (``inspector_model_reloads_total{result=
        "failure"}`` counts it, for the alert). Returns ``True`` on success.
        """
        if self.pipeline is None:
            return False
        previous = self.model_label
        try:
            worker, postprocessor = self._load_model()
        except Exception as exc:
            log.error("model reload failed, still serving %s: %s", previous, exc)
            return False
        self.pipeline.swap_model(worker, postprocessor)
        log.info("model reloaded: %s (was %s)", self.model_label, previous)
        return True

    def main_loop(self) -> None:
        """Refresh gauges until asked to exit, a stage dies, or finite sources are done."""
        if self.pipeline is None:  # stopped during start-up
            return
        while not self.should_exit.wait(0.1):
            if self._reload_requested.is_set() and not (
                self._reloader is not None and self._reloader.is_alive()
            ):
                self._reload_requested.clear()
                # Loading and warming take seconds: frames keep flowing meanwhile.
                self._reloader = threading.Thread(
                    target=self.reload_model, name="inspector-reload", daemon=True
                )
                self._reloader.start()
            self.pipeline.update_gauges()
            self.metrics.ready.set(0 if self.readiness() else 1)
            if self.pipeline.fatal is not None or self.pipeline.finished:
                break

    def shutdown(self) -> bool:
        """Drain within the time limit, then stop everything. Returns ``True`` if clean."""
        clean = True
        self.metrics.ready.set(0)
        if self.pipeline is not None:
            self.pipeline.stop_fetching()
            deadline = time.monotonic() + self.config.daemon.drain_timeout_s
            while not self.force_exit and time.monotonic() < deadline:
                if self.pipeline.wait_drained(0.1):
                    break
            else:
                clean = False
                log.warning(
                    "drain incomplete: %d frame(s) still in flight; their offsets are not "
                    "committed and will be processed again",
                    self.pipeline.in_flight,
                )
            self.pipeline.close(timeout=0.5 if self.force_exit else 10.0)
            clean = clean and self.pipeline.fatal is None
        for component in self._unstarted:
            try:
                component.close()
            except Exception:
                log.exception("closing %s failed", component.name)
        if self.server is not None:
            self.server.stop()
        return clean

    def run(self) -> int:
        """Start, serve until told to stop, drain; returns the process exit code."""
        try:
            self.startup()
            self.main_loop()
        finally:
            clean = self.shutdown()
        return 0 if clean else 1
