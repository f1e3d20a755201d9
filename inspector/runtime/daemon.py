"""The daemon: builds every component, owns the lifecycle (startup, main loop, drain).

Like uvicorn: startup, then a main loop that watches ``should_exit``, then a shutdown bounded
by ``daemon.drain_timeout_s`` as one deadline: stop fetching, finish in-flight frames, stop the
model, flush the sinks, commit, close the consumers, stop HTTP; a final ``inspector stopped``
line says what was delivered and what was left. The first SIGTERM/SIGINT starts that (also
while start-up still waits for a broker or a model); a second one exits at once.

Signals are acted on by a thread of their own (:mod:`inspector.runtime.signals`), never delayed by a
main thread blocked in a client call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from inspector.errors import BrokerUnavailableError, WaitAbandonedError
from inspector.model.fastpath import in_passing_thread
from inspector.runtime.config import InspectorConfig
from inspector.runtime.control.line import LineControl
from inspector.runtime.control.restore import camera_labels, restore_models, starting_line
from inspector.runtime.control.results_wiring import ResultsWiring
from inspector.runtime.control.server import HttpServer
from inspector.runtime.kafka.diagnosis import ConnectionDiagnosis
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import (
    ModelSet,
    ServedModel,
    label_of,
    load_configured_model,
    load_served_model,
)
from inspector.runtime.pacing import Backoff
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.recipes import Recipes
from inspector.runtime.signals import watch_signals
from inspector.runtime.sinks import build_sinks
from inspector.runtime.sinks.base import Sink
from inspector.runtime.sources.base import Source

log = logging.getLogger(__name__)

#: Backoff while the broker is unreachable at start-up (seconds).
_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 30.0
#: Share of ``daemon.drain_timeout_s`` kept for flushing, committing and closing (at most 5 s):
#: frames still in flight by then are left uncommitted, but what was delivered is committed.
_CLOSE_SHARE = 0.2
_CLOSE_MAX_S = 5.0


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
        self.metrics = Metrics(self.registry, cameras=camera_labels(config))
        self.should_exit = threading.Event()
        self.force_exit = False
        self.exit_code: int | None = None
        self.pipeline: Pipeline | None = None
        self.server: HttpServer | None = None
        self.control: LineControl | None = None  # the control API's, once the pipeline runs
        # Components built but not yet owned by a running pipeline: closed here on failure.
        self._unstarted: list[Source | Sink] = []
        self.model_label = "(none)"
        self._waiting_for: str | None = None
        self._started = threading.Event()  # start-up finished: /readyz may answer 200 from now
        # Why kafka-python cannot connect when a setting is at fault (it only logs it).
        self.kafka_diagnosis = ConnectionDiagnosis(config.kafka)
        # Retention, labels and the operator console's live data (runtime.control.console).
        self.results = ResultsWiring(config, self.metrics)
        self._reload_requested = threading.Event()
        self._reloader: threading.Thread | None = None
        # The live recipes once restored (the control API edits them in place); until then
        # the configured cameras' (the plant sinks ask for deadlines from their first result).
        self._recipes = Recipes(config.cameras)

    # --- signals ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: first drains, second exits at once; SIGHUP reloads the model.

        Call from the main thread (see :func:`inspector.runtime.signals.watch_signals`).
        """
        watch_signals(self.handle_signal)

    def request_reload(self) -> None:
        """Ask the main loop to reload the model in the background (thread-safe)."""
        self._reload_requested.set()

    def handle_signal(self, signum: int) -> None:
        """What one signal does (thread-safe): reload, drain, or on the second exit now."""
        if signum == signal.SIGHUP:
            self.request_reload()
            return
        name = signal.Signals(signum).name
        if self.should_exit.is_set():
            self.force_exit = True
            in_flight = self.pipeline.in_flight if self.pipeline is not None else 0
            log.warning(
                "second %s: exiting now; %d frame(s) in flight are not committed and will be "
                "processed again",
                name,
                in_flight,
            )
            log.warning("inspector stopped (forced, exit code 1)")
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):  # exiting anyway
                    handler.flush()
            sys.stderr.flush()
            os._exit(1)
        log.info("%s: shutting down (send again to exit at once)", name)
        self.request_exit()

    def request_exit(self) -> None:
        """Ask the main loop to drain and stop (thread-safe)."""
        self.should_exit.set()

    # --- lifecycle ---------------------------------------------------------------------------

    def _deadline_ms(self, camera_id: str) -> int | None:
        """A camera's ``deadline_ms`` in the live recipes (for the plant sinks' ``late``)."""
        return self._recipes.deadline_ms(camera_id)

    def readiness(self) -> list[str]:
        """Reasons the daemon is not ready; empty when it is."""
        diagnosis = self.kafka_diagnosis.reason()
        if not self._started.is_set() or self.pipeline is None:
            # Until start-up has finished, whatever the pipeline's sources say: a start that
            # fails once the pipeline exists spends seconds shutting it down.
            return [r for r in (self._waiting_for or "starting", diagnosis) if r]
        if self.should_exit.is_set():
            return ["shutting down"]
        reasons = self.pipeline.readiness_reasons()
        return [diagnosis, *reasons] if reasons and diagnosis else reasons

    def readiness_notes(self) -> list[str]:
        """What ``/readyz`` adds to a 200 answer (e.g. a Kafka source that is a standby)."""
        return self.pipeline.readiness_notes() if self.pipeline is not None else []

    def startup(self) -> None:
        """Serve health, load and warm the model, connect sources and sinks, start threads.

        Raises:
            InspectorError: A component cannot start (message says why and what to do).
        """
        cfg = self.config
        self.server = HttpServer(
            cfg.http.host,
            cfg.http.port,
            self.registry,
            self.readiness,
            self.metrics,
            admin_token=cfg.http.admin_token,
            control=lambda: self.control,
            notes=self.readiness_notes,
            read_token=cfg.http.read_token,
            results=self.results.access(),
        )
        self.server.start()
        try:
            served = self._load_model()
            models = ModelSet(served, self.metrics)
            for name, path in cfg.models.items():
                models.add(self._load_model(name, path))
            line = starting_line(cfg, models)
            sources = line.build_sources(cfg.kafka, self.metrics)
            sinks = [
                *build_sinks(cfg, self.metrics, deadline_ms=self._deadline_ms),
                *self.results.sinks(),
            ]
            self._unstarted = [*sinks, *sources]
            for sink in sinks:
                self._set_up(sink)
            for index, source in enumerate(sources):
                with line.entry(index):  # names the state file's entry, if it came from there
                    self._set_up(source)
        except WaitAbandonedError:
            return
        if self.should_exit.is_set():  # asked to stop while waiting for the broker
            return
        ids = line.ids
        # Said at start: a daemon waiting for sources to be added must not look hung.
        keep_open, why = cfg.keeps_open()
        done = "keeps running until told to stop" if keep_open else "finishes"
        log.info("inspector %s once every source has run dry (%s)", done, why)
        try:
            recipes = restore_models(line, models, cfg, self.metrics, stop=self.should_exit)
        except WaitAbandonedError:
            return
        self._recipes = recipes
        self.pipeline = Pipeline(
            sources,
            cfg.batcher,
            models,
            sinks,
            self.metrics,
            max_in_flight_bytes=cfg.admission.max_in_flight_bytes,
            stall_timeout_s=cfg.daemon.stall_timeout_s,
            recipes=recipes,
            source_ids=ids,
            keep_open=keep_open,
        )
        self.pipeline.start(held=line.paused)
        self.control = LineControl(
            self.pipeline.intake,
            models,
            recipes,
            cfg.kafka,
            self.metrics,
            dict(zip(ids, line.sources, strict=True)),
            load_model=lambda name, path: load_served_model(
                name, path, cfg, self.metrics, stop=self.should_exit
            ),
            state_path=cfg.daemon.state_path,
            shadows=self.pipeline.shadows,
            retention=self.results.access().retention,
            promoted=line.promoted,
        )
        self._unstarted = []
        self._started.set()
        log.info(
            "inspector running: model %s on %s, %d source(s), %d sink(s), http :%d",
            self.model_label,
            served.worker.device,
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
        backoff = Backoff(_RETRY_FIRST_S, _RETRY_MAX_S)
        waiting = (
            f"waiting for kafka at {self.config.kafka.bootstrap_servers} "
            f"({component.name}; kafka.bootstrap_servers)"
        )
        while not self.should_exit.is_set():
            # Said from the first attempt on: it may block for request_timeout_ms (30 s).
            self._waiting_for = (
                waiting if component.name == "kafka" else f"starting {component.name}"
            )
            try:
                # A client constructor blocks while it looks for a broker (kafka-python: up to
                # request_timeout_ms): a thread of its own keeps SIGTERM answered meanwhile.
                in_passing_thread(
                    component.setup, f"inspector-setup-{component.name}", self.should_exit
                )
                self._waiting_for = None
                return
            except BrokerUnavailableError as exc:
                self._waiting_for = waiting
                delay = backoff.next()
                log.warning("%s; retrying in %.0f s", exc, delay)
                self.should_exit.wait(delay)

    def _load_model(self, name: str | None = None, path: Path | None = None) -> ServedModel:
        """Load, check and warm up the configured checkpoint; publish its info and thresholds.

        With ``name`` and ``path``: one of ``models`` (served by name for the recipes).
        The torch work runs on a thread that ends with it, as for every load
        (:func:`~inspector.runtime.models.load_served_model`); a SIGTERM meanwhile abandons it.

        Raises:
            InspectorError: No checkpoint configured, or it cannot be loaded.
        """
        cfg, metrics, stop = self.config, self.metrics, self.should_exit
        if name is not None and path is not None:
            return load_served_model(name, path, cfg, metrics, stop=stop)
        served = load_configured_model(cfg, metrics, stop=stop)
        self.model_label = label_of(served)
        return served

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
            served = self._load_model()
        except Exception as exc:
            log.error("model reload failed, still serving %s: %s", previous, exc)
            return False
        self.pipeline.swap_model(served)
        log.info("model reloaded: %s (was %s)", self.model_label, previous)
        return True

    def main_loop(self) -> None:
        """Refresh gauges until asked to exit, a stage dies, or finite sources are done."""
        if self.pipeline is None:  # stopped during start-up
            return
        was_ready: bool | None = None
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
            reasons = self.readiness()
            self.metrics.ready.set(0 if reasons else 1)
            was_ready = self._log_readiness(reasons, was_ready)
            if self.pipeline.fatal is not None or self.pipeline.finished:
                break

    def _log_readiness(self, reasons: list[str], was_ready: bool | None) -> bool:
        """Log when ``/readyz`` turns 200 or 503 (and why); returns whether it is 200 now.

        Running is not ready yet: a Kafka source may still wait for its partitions, and an
        operator reading the log should see which it is before sending frames.
        """
        ready = not reasons
        if ready == was_ready:
            return ready
        if ready:
            notes = "; ".join(self.readiness_notes())
            log.info("inspector ready (/readyz 200)%s", f": {notes}" if notes else "")
        else:
            state = "not ready yet" if was_ready is None else "not ready"
            log.info("inspector %s (/readyz 503): %s", state, "; ".join(reasons))
        return ready

    def shutdown(self) -> bool:
        """Stop everything under one deadline; returns ``True`` if nothing was left undone.

        Not clean: frames left undelivered (their offsets stay uncommitted, they come again),
        or a pipeline thread died.
        """
        timeout = self.config.daemon.drain_timeout_s
        deadline = time.monotonic() + timeout
        close_from = deadline - min(_CLOSE_MAX_S, _CLOSE_SHARE * timeout)
        self.metrics.ready.set(0)
        clean = True
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.stop_fetching()
            drained = False
            while not (drained or self.force_exit) and time.monotonic() < close_from:
                drained = pipeline.wait_drained(min(0.1, max(0.0, close_from - time.monotonic())))
            if self.force_exit:  # asked again (the demo's second Ctrl+C): no drain, short closes
                deadline = min(deadline, time.monotonic() + 0.5)
            elif not drained:
                log.warning(
                    "drain incomplete: %d frame(s) still in flight after %.1f s",
                    pipeline.in_flight,
                    timeout,
                )
            pipeline.close(deadline)
            if pipeline.undelivered:
                log.error(
                    "%d frame(s) left undelivered: their offsets are not committed and they "
                    "will be processed again",
                    pipeline.undelivered,
                )
            clean = pipeline.undelivered == 0 and pipeline.fatal is None
        for component in self._unstarted:
            try:
                component.close()
            except Exception:
                log.exception("closing %s failed", component.name)
        if self.server is not None:
            self.server.stop()
        self.results.close()
        return clean

    def run(self) -> int:
        """Start, serve until told to stop, shut down; returns the process exit code."""
        kafka_log = logging.getLogger("kafka")
        kafka_log.addHandler(self.kafka_diagnosis)
        try:
            try:
                self.startup()
                self.main_loop()
            except BaseException:
                if not self._started.is_set():
                    self._waiting_for = "start-up failed"
                self.shutdown()
                log.info("inspector stopped: start-up or the main loop failed (see above)")
                raise
            code = 0 if self.shutdown() else 1
        finally:
            kafka_log.removeHandler(self.kafka_diagnosis)
        pipeline = self.pipeline
        log.info(
            "inspector stopped: %d result(s) and %d dead letter(s) delivered, %d frame(s) left "
            "undelivered; exit code %d",
            pipeline.outcomes.results_delivered if pipeline else 0,
            pipeline.outcomes.dead_letters_delivered if pipeline else 0,
            pipeline.undelivered if pipeline else 0,
            code,
        )
        return code
