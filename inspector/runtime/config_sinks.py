"""Settings of the sinks: the ``sinks`` section of the daemon's configuration.

A leaf like :mod:`inspector.runtime.config`, which re-exports these names (import them from
there).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from inspector.model.config import Frozen


class KafkaSinkConfig(Frozen):
    """Results (and dead letters) to Kafka; topics and connection in ``kafka``.

    Attributes:
        enabled: Publish results to ``kafka.results_topic``.
    """

    enabled: bool = True


class JsonlSinkConfig(Frozen):
    """Results appended to a JSON-lines file.

    Attributes:
        path: File to append to; ``None`` disables.
    """

    path: Path | None = None


class OverlaySinkConfig(Frozen):
    """Heat-map overlays of anomalous frames saved to a folder, bounded.

    Attributes:
        directory: Folder; ``None`` disables.
        max_files: Oldest files are deleted beyond this count.
        max_bytes: ...or beyond this total size.
    """

    directory: Path | None = None
    max_files: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)


class SinksConfig(Frozen):
    """Where results go."""

    kafka: KafkaSinkConfig = KafkaSinkConfig()
    jsonl: JsonlSinkConfig = JsonlSinkConfig()
    overlays: OverlaySinkConfig = OverlaySinkConfig()
