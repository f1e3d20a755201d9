"""Results appended to a JSON-lines file (and dead letters to a sibling file)."""

from __future__ import annotations

import json
import threading
from typing import IO

from inspector.config import JsonlSinkConfig
from inspector.errors import ConfigError
from inspector.metrics import Metrics
from inspector.records import DeadLetter, Inspection
from inspector.sinks.base import DoneFn, Sink


class JsonlSink(Sink):
    """One ``inspector.result/v1`` message per line; dead letters in ``<stem>.dlq.jsonl``.

    Each line is flushed as it is written, so a crash loses at most the line in progress.

    Args:
        config: The file path.
        metrics: Unused today; kept for the common sink signature.
    """

    name = "jsonl"

    def __init__(self, config: JsonlSinkConfig, metrics: Metrics) -> None:
        if config.path is None:
            raise ConfigError("sinks.jsonl.path: no file given")
        self.path = config.path
        self.dlq_path = config.path.with_name(f"{config.path.stem}.dlq.jsonl")
        self.metrics = metrics
        self._lock = threading.Lock()
        self._out: IO[str] | None = None
        self._dlq: IO[str] | None = None

    def setup(self) -> None:
        """Create the folder and open both files for appending."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("a", encoding="utf-8")
            self._dlq = self.dlq_path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"sinks.jsonl.path: cannot open {self.path}: {exc.strerror}") from exc

    def _write(self, target: IO[str] | None, line: str, done: DoneFn) -> None:
        try:
            with self._lock:
                if target is None:
                    raise OSError(f"{self.path} is not open")
                target.write(line + "\n")
                target.flush()
        except OSError as exc:
            done(exc)
            return
        done(None)

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Append the result line."""
        self._write(self._out, inspection.message.to_json(), done)

    def publish_dead_letter(self, letter: DeadLetter, done: DoneFn) -> None:
        """Append the dead letter's reason and origin (not its payload)."""
        record: dict[str, object] = {
            "reason": letter.reason,
            "error_type": letter.error_type,
            "stage": letter.stage,
            "camera_id": letter.camera_id,
            "failed_at": letter.failed_at,
        }
        if letter.raw is not None:
            record |= {
                "source": {
                    "topic": letter.raw.topic,
                    "partition": letter.raw.partition,
                    "offset": letter.raw.offset,
                },
                "value_bytes": len(letter.raw.value),
            }
        self._write(self._dlq, json.dumps(record), done)

    def close(self) -> None:
        """Close both files."""
        with self._lock:
            for handle in (self._out, self._dlq):
                if handle is not None:
                    handle.close()
            self._out = self._dlq = None


__all__ = ["JsonlSink"]
