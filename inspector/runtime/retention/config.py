"""The ``retention:`` section (``InspectorConfig.retention``): which frames the daemon keeps.

A leaf of the package (it imports only the shared :class:`~inspector.model.config.Frozen`
base), so the configuration root can import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from inspector.model.config import Frozen

#: 10 GiB: a month of flagged frames of a few cameras at a few MB each.
DEFAULT_MAX_BYTES = 10 * 1024**3


class RetentionConfig(Frozen):
    """Retained frames: flagged frames and a sample of good ones, kept in a bounded folder.

    Attributes:
        enabled: Off by default: retention writes frames to disk, which an installation must
            ask for (disk budget, data protection).
        path: The folder the daemon owns (created if missing); required when enabled.
            Nothing else may write into it: files it does not index are deleted when the
            daemon starts.
        good_sample_rate: Share of good (not flagged) frames kept too, 0..1, chosen from a
            hash of the frame id, so the same frames are kept on every run.
        max_bytes: Bound on the folder: retained files plus the index. The oldest unlabelled
            frames are deleted first; labelled frames are kept until a dataset export.
        max_age_hours: Frames older than this are deleted (labelled ones once exported).
        max_pending: Frames waiting for the writer thread; beyond that new ones are dropped
            (counted), so a slow disk never holds up the pipeline.
        image_format: Encoding of camera frames (Kafka frames keep the bytes they came in).
    """

    enabled: bool = False
    path: Path | None = None
    good_sample_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    max_age_hours: float = Field(default=24.0 * 30, gt=0.0)
    max_pending: int = Field(default=64, ge=1)
    image_format: Literal["png", "jpeg"] = "png"

    @model_validator(mode="after")
    def _path_when_enabled(self) -> RetentionConfig:
        if self.enabled and self.path is None:
            raise ValueError("retention.path is required when retention.enabled is true")
        return self


__all__ = ["DEFAULT_MAX_BYTES", "RetentionConfig"]
