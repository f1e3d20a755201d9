"""Results appended to a JSON-lines file (and dead letters to a sibling file).

Each line goes to the kernel in one unbuffered ``write`` on a file opened for appending, so a
crash of the process loses at most the line in progress, and concurrent writers (threads, or
a second process appending to the same file) never interleave inside a line. There is no
``fsync`` per line: a power cut may lose what the OS had not written back yet.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from inspector.errors import ConfigError
from inspector.runtime.config import JsonlSinkConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Inspection
from inspector.runtime.sinks.base import DoneFn, Sink

log = logging.getLogger(__name__)


class _LineFile:
    """An append-only file of lines, opened on first use; callers hold the sink's lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: BinaryIO | None = None
        # After a failed write the file may end in a fragment; the next line starts on a fresh
        # line so that only the fragment is unreadable, not the good line after it.
        self.fragment = False

    def open(self) -> None:
        if self.handle is None:
            # buffering=0: every write() is one system call, nothing waits in a Python buffer.
            self.handle = self.path.open("ab", buffering=0)

    def write_line(self, line: bytes) -> None:
        self.open()
        assert self.handle is not None
        data = (b"\n" if self.fragment else b"") + line + b"\n"
        view = memoryview(data)
        while view:
            # A raw write may be short (disk nearly full, signals); finish the line.
            written = self.handle.write(view)
            if written is None:  # pragma: no cover - only non-blocking files return None
                raise OSError(f"{self.path}: write would block")
            view = view[written:]
            # A write that raises before any byte leaves the file as it was.
            self.fragment = bool(view)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class JsonlSink(Sink):
    """One ``inspector.result/v1`` message per line; dead letters in ``<stem>.dlq.jsonl``.

    A dead-letter line holds ``reason``, ``error_type``, ``stage``, ``camera_id``,
    ``failed_at`` and, for Kafka input, ``source`` (``topic``, ``partition``, ``offset``) and
    ``value_bytes`` (the payload's size; the payload itself stays in the Kafka DLQ topic).
    The dead-letter file is created on the first dead letter.

    :meth:`publish` never raises: a failed write (disk full, path is a folder...) is reported
    through ``done(exc)``; ``done`` is called exactly once, before :meth:`publish` returns.

    Args:
        config: The file path (must not be ``None``).
        metrics: Unused today (the pipeline counts publish failures); kept for the common
            sink signature.

    Raises:
        ConfigError: ``config.path`` is ``None``.
    """

    name = "jsonl"

    def __init__(self, config: JsonlSinkConfig, metrics: Metrics) -> None:
        if config.path is None:
            raise ConfigError("sinks.jsonl.path: no file given")
        self.path = config.path
        self.dlq_path = config.path.with_name(f"{config.path.stem}.dlq.jsonl")
        self.metrics = metrics
        self._lock = threading.Lock()
        self._results = _LineFile(self.path)
        self._dead_letters = _LineFile(self.dlq_path)
        self._closed = False

    def setup(self) -> None:
        """Create the parent folder and open the results file for appending.

        Raises:
            ConfigError: The folder or the file cannot be created or opened.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._closed = False
                self._results.open()
        except OSError as exc:
            raise ConfigError(
                f"sinks.jsonl.path: cannot open {self.path} for appending: {exc.strerror or exc}"
            ) from exc

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Append the result line, then call ``done``."""
        self._append(self._results, inspection.message.to_json, done)

    def publish_dead_letter(self, letter: DeadLetter, done: DoneFn) -> None:
        """Append the dead letter's reason and origin (not its payload), then call ``done``."""
        self._append(self._dead_letters, lambda: json.dumps(dead_letter_record(letter)), done)

    def ready(self) -> bool:
        """Whether the results file is open."""
        with self._lock:
            return self._results.handle is not None

    def close(self) -> None:
        """Close both files; later publishes fail through ``done``."""
        with self._lock:
            self._closed = True
            for target in (self._results, self._dead_letters):
                try:
                    target.close()
                except OSError:
                    log.exception("closing %s failed", target.path)

    def _append(self, target: _LineFile, render: Callable[[], str], done: DoneFn) -> None:
        error: BaseException | None = None
        try:
            line = render().encode("utf-8")
            with self._lock:
                if self._closed:
                    raise OSError(f"{target.path}: sink is closed")
                target.write_line(line)
        except Exception as exc:  # never raise from publish: the pipeline gets the error
            error = exc
        # Outside the try: an exception raised by ``done`` itself is the caller's, and must not
        # turn into a second ``done`` call.
        done(error)


def dead_letter_record(letter: DeadLetter) -> dict[str, object]:
    """The JSON object written for a dead letter (no payload bytes).

    Args:
        letter: The dead letter.

    Returns:
        A JSON-serialisable dict.
    """
    record: dict[str, object] = {
        "reason": letter.reason,
        "error_type": letter.error_type,
        "stage": letter.stage,
        "camera_id": letter.camera_id,
        "failed_at": letter.failed_at,
    }
    if letter.raw is not None:
        record["source"] = {
            "topic": letter.raw.topic,
            "partition": letter.raw.partition,
            "offset": letter.raw.offset,
        }
        record["value_bytes"] = len(letter.raw.value)
    return record


__all__ = ["JsonlSink", "dead_letter_record"]
