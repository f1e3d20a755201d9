"""Retained frames: flagged frames and a sample of good ones, kept for review and labelling.

* :mod:`.config`: the ``retention:`` section;
* :mod:`.records`: the records, errors, label rules and the index schema;
* :mod:`.files`: file names and crash-safe writes;
* :mod:`.reader`: :class:`RetentionIndex`, queries and labels (any process);
* :mod:`.store`: :class:`RetentionStore`, the owner's view: retain, evict, reconcile;
* :mod:`.encode`: retained records from inspections; the daemon's sink that writes them is
  :class:`inspector.runtime.sinks.retention.RetentionSink`.

The dataset export (:mod:`inspector.ml.dataset_export`) reads a folder through
:class:`RetentionIndex`. The package itself exports only the store's side, which needs nothing
beyond the standard library (a process that only reads or writes the folder starts fast);
import the configuration from :mod:`.config` (mounted as ``InspectorConfig.retention``).
"""

from __future__ import annotations

from inspector.runtime.retention.reader import RetentionIndex
from inspector.runtime.retention.records import (
    LABELS,
    UNLABELLED,
    Label,
    RetainedFrame,
    RetentionDroppedError,
    RetentionItem,
    RetentionRequestError,
    UnknownFrameError,
    View,
)
from inspector.runtime.retention.store import ReconcileReport, RetentionStore

__all__ = [
    "LABELS",
    "UNLABELLED",
    "Label",
    "ReconcileReport",
    "RetainedFrame",
    "RetentionDroppedError",
    "RetentionIndex",
    "RetentionItem",
    "RetentionRequestError",
    "RetentionStore",
    "UnknownFrameError",
    "View",
]
