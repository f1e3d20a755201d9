"""Retained frames as records: the row type, errors, label rules, the SQLite schema.

Imports only the standard library and :mod:`inspector.errors`, so that every user of retained
frames (the daemon's sink, the future HTTP routes, :mod:`inspector.ml.dataset_export`) shares
one definition of what a retained frame is.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from inspector.errors import ConfigError, InspectorError

#: What an operator says about a retained frame.
Label = Literal["false_alarm", "defect", "missed_defect"]
LABELS: tuple[Label, ...] = get_args(Label)
#: Filter of :meth:`RetentionStore.list` for frames nobody labelled yet.
UNLABELLED = "unlabelled"
#: The files of a retained frame that can be shown.
View = Literal["frame", "overlay", "mask"]
VIEWS: tuple[View, ...] = get_args(View)
#: Why a retained copy was dropped: the ``reason`` label of ``inspector_retention_dropped_total``
#: (a fixed set, so the label stays bounded).
DropReason = Literal["queue_full", "too_large", "full", "disk_error", "encode_error"]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)

#: Longest defect kind (it becomes a folder name in an export).
MAX_KIND_CHARS = 64
#: Longest operator note.
MAX_NOTE_CHARS = 2000
#: Most rows one :meth:`RetentionStore.list` call returns.
MAX_LIST_LIMIT = 500
#: Largest sequence number (a list cursor): SQLite's largest INTEGER; a larger one overflows.
MAX_SEQ = 2**63 - 1

#: Suffixes a retained frame file may have; anything else is re-encoded by the sink, so a
#: producer's bytes never choose a file name.
FRAME_SUFFIXES = frozenset({".png", ".jpg", ".bmp", ".tif", ".webp", ".gif"})


class UnknownFrameError(InspectorError, KeyError):
    """No retained frame has this id (never retained, or already evicted)."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; the message reads better as it is.
        return str(self.args[0]) if self.args else "unknown frame"


class RetentionRequestError(ConfigError):
    """A label, kind, note, view or query limit that the retention store refuses."""


class RetentionDroppedError(InspectorError):
    """A frame's retained copy was not written; the result itself is unaffected.

    Attributes:
        reason: One of :data:`DROP_REASONS`.
    """

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(message)
        self.reason: DropReason = reason

    def __reduce__(self) -> tuple[type[RetentionDroppedError], tuple[DropReason, str]]:
        return type(self), (self.reason, str(self))


@dataclass(frozen=True)
class RetentionItem:
    """One frame to retain, already encoded: what the sink hands the store.

    Attributes:
        frame_id: The producer's id, kept verbatim (it never names a file).
        camera_id: Camera that took it.
        score: Normalised score (threshold at 0.5).
        threshold: The image threshold applied, normalised.
        is_anomalous: Whether the frame was flagged.
        model_name: Name of the model that judged it.
        captured_at: Capture time as given by the producer, if any.
        processed_at: When the verdict was made (RFC 3339).
        frame: The encoded frame (the Kafka payload as received, or PNG/JPEG).
        frame_suffix: Its file suffix, one of :data:`FRAME_SUFFIXES`.
        overlay: Heat-map overlay JPEG, if the frame had a map.
        mask: Defect mask PNG (0 / 255, frame size), if the frame had one.
        result: The result message as published (JSON).
    """

    frame_id: str
    camera_id: str
    score: float
    threshold: float
    is_anomalous: bool
    model_name: str
    captured_at: str | None
    processed_at: str
    frame: bytes
    frame_suffix: str
    overlay: bytes | None
    mask: bytes | None
    result: bytes

    @property
    def size_bytes(self) -> int:
        """Bytes its files take on disk (content only)."""
        return sum(len(b) for b in (self.frame, self.overlay, self.mask, self.result) if b)


@dataclass(frozen=True)
class RetainedFrame:
    """One row of the index: a retained frame, its verdict, its files and its label.

    File names are relative to the retention folder. Times are UTC, RFC 3339 with ``Z``.

    Attributes:
        seq: Retained order (keyset pagination cursor: ``list(before=seq)``).
        frame_id: The producer's id.
        camera_id: Camera that took it.
        score: Normalised score.
        threshold: Image threshold applied.
        is_anomalous: Whether the model flagged it.
        model_name: Model that judged it.
        captured_at: Producer's capture time.
        processed_at: Verdict time.
        frame_file: The frame.
        overlay_file: The overlay, if any.
        mask_file: The predicted defect mask, if any.
        result_file: The result JSON.
        size_bytes: Total bytes of its files.
        retained_at: When it was written.
        label: The operator's label, if any.
        label_kind: Defect kind of ``defect`` / ``missed_defect`` labels (``None``: unset).
        note: The operator's note.
        labelled_at: When it was labelled.
        exported_at: When a dataset export last included it (it may be evicted from then on).
    """

    seq: int
    frame_id: str
    camera_id: str
    score: float
    threshold: float
    is_anomalous: bool
    model_name: str
    captured_at: str | None
    processed_at: str
    frame_file: str
    overlay_file: str | None
    mask_file: str | None
    result_file: str
    size_bytes: int
    retained_at: str
    label: Label | None
    label_kind: str | None
    note: str | None
    labelled_at: str | None
    exported_at: str | None

    @property
    def files(self) -> tuple[str, ...]:
        """Its files, relative to the retention folder."""
        names = (self.frame_file, self.overlay_file, self.mask_file, self.result_file)
        return tuple(n for n in names if n is not None)


#: The columns of :class:`RetainedFrame`, in its field order.
COLUMNS = (
    "seq, frame_id, camera_id, score, threshold, is_anomalous, model_name, captured_at, "
    "processed_at, frame_file, overlay_file, mask_file, result_file, bytes, retained_at, "
    "label, label_kind, note, labelled_at, exported_at"
)


def frame_from_row(row: tuple[object, ...]) -> RetainedFrame:
    """A :class:`RetainedFrame` from a row selected with :data:`COLUMNS`."""
    values = list(row)
    values[5] = bool(values[5])  # is_anomalous: SQLite has no booleans
    return RetainedFrame(*values)  # type: ignore[arg-type]


def utc_text(moment: datetime) -> str:
    """A fixed-width UTC time (``2025-01-01T00:00:00.000000Z``): sorts as text does."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_label(label: str | None, kind: str | None, note: str | None) -> None:
    """Refuse a label that the index must not hold.

    Raises:
        RetentionRequestError: Unknown label, a kind on a ``false_alarm`` or no label, a kind
            that is empty, too long or not printable, or a note that is too long.
    """
    if label is not None and label not in LABELS:
        raise RetentionRequestError(f"label must be one of {', '.join(LABELS)} or null")
    if kind is not None:
        if label not in ("defect", "missed_defect"):
            raise RetentionRequestError("kind is only given with a defect or missed_defect label")
        if not 0 < len(kind) <= MAX_KIND_CHARS or not kind.isprintable():
            raise RetentionRequestError(f"kind must be 1 to {MAX_KIND_CHARS} printable characters")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise RetentionRequestError(f"note is longer than {MAX_NOTE_CHARS} characters")


#: Schema changes by version; a database is brought to the last one when opened. Append only:
#: a released version's statements never change.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """
            CREATE TABLE frames (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                frame_id TEXT NOT NULL UNIQUE,
                camera_id TEXT NOT NULL,
                score REAL NOT NULL,
                threshold REAL NOT NULL,
                is_anomalous INTEGER NOT NULL CHECK (is_anomalous IN (0, 1)),
                model_name TEXT NOT NULL,
                captured_at TEXT,
                processed_at TEXT NOT NULL,
                frame_file TEXT NOT NULL,
                overlay_file TEXT,
                mask_file TEXT,
                result_file TEXT NOT NULL,
                bytes INTEGER NOT NULL CHECK (bytes >= 0),
                retained_at TEXT NOT NULL,
                label TEXT CHECK (label IN ('false_alarm', 'defect', 'missed_defect')),
                label_kind TEXT,
                note TEXT,
                labelled_at TEXT,
                exported_at TEXT
            )
            """,
            "CREATE INDEX frames_by_camera ON frames (camera_id, seq)",
            "CREATE INDEX frames_by_label ON frames (label, seq)",
            "CREATE INDEX frames_by_retained_at ON frames (retained_at)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(connection: sqlite3.Connection, where: str) -> int:
    """Create or upgrade the schema, in one transaction; the version it was at before.

    ``connection`` must be in autocommit mode (``isolation_level=None``).

    Raises:
        ConfigError: The index was written by a newer inspector (a later schema version).
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"{where}: the retention index is at schema version {current}, this inspector "
                f"knows up to {SCHEMA_VERSION}; upgrade inspector or use another retention.path"
            )
        for version, statements in MIGRATIONS:
            if version > current:
                for statement in statements:
                    connection.execute(statement)
                connection.execute("DELETE FROM schema_version")
                connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return current


__all__ = [
    "COLUMNS",
    "DROP_REASONS",
    "FRAME_SUFFIXES",
    "LABELS",
    "MAX_KIND_CHARS",
    "MAX_LIST_LIMIT",
    "MAX_NOTE_CHARS",
    "SCHEMA_VERSION",
    "UNLABELLED",
    "VIEWS",
    "DropReason",
    "Label",
    "RetainedFrame",
    "RetentionDroppedError",
    "RetentionItem",
    "RetentionRequestError",
    "UnknownFrameError",
    "View",
    "check_label",
    "frame_from_row",
    "migrate",
    "utc_text",
]
