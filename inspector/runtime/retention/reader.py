"""The retention index opened for queries and labels: what the API and the export use.

:class:`RetentionIndex` reads the index, sets labels and marks exports; it never writes or
deletes a file, so any process may open it while the daemon (the folder's owner, through
:class:`~inspector.runtime.retention.store.RetentionStore`) keeps writing. One SQLite connection
behind a lock serves every thread; WAL mode lets other processes read meanwhile.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from inspector.errors import ConfigError
from inspector.runtime.retention.files import FILES_DIR
from inspector.runtime.retention.records import (
    COLUMNS,
    MAX_LIST_LIMIT,
    UNLABELLED,
    VIEWS,
    Label,
    RetainedFrame,
    RetentionRequestError,
    UnknownFrameError,
    View,
    check_label,
    frame_from_row,
    migrate,
    utc_text,
)

INDEX_NAME = "index.sqlite3"
INDEX_FILES = (INDEX_NAME, f"{INDEX_NAME}-wal", f"{INDEX_NAME}-shm")
#: WAL pages before SQLite folds them into the database; the WAL file is then cut back to
#: ``_WAL_LIMIT`` bytes. Small, so the index's share of ``max_bytes`` stays small and steady.
_WAL_AUTOCHECKPOINT_PAGES = 64
_WAL_LIMIT = 256 * 1024
#: How long a write waits for another connection's transaction (an export, the daemon).
_BUSY_TIMEOUT_S = 5.0


def utc_now() -> datetime:
    """The current UTC time (the default clock)."""
    return datetime.now(UTC)


class ScoredRow(NamedTuple):
    """One retained frame's verdict, for threshold what-ifs.

    Attributes:
        score: Normalised image score (0..1).
        threshold: The normalised image threshold applied to it.
        is_anomalous: Whether it was flagged (so retained whole, not as a sampled good frame).
        label: The operator's label, or ``None``.
    """

    score: float
    threshold: float
    is_anomalous: bool
    label: str | None


class RetentionIndex:
    """Queries, labels and export marks on a retention folder's index. Thread-safe.

    Args:
        root: The retention folder (created if missing, with an empty index).
        clock: Current UTC time (``labelled_at``, ``exported_at``).

    Raises:
        ConfigError: The folder or its index cannot be opened, or the index was written by a
            newer inspector.
    """

    def __init__(self, root: Path, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.root = root
        self.clock = clock
        self._lock = threading.RLock()
        try:
            (root / FILES_DIR).mkdir(parents=True, exist_ok=True)
            self.files_root = (root / FILES_DIR).resolve(strict=True)
            self._db = sqlite3.connect(
                root / INDEX_NAME,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,  # explicit BEGIN IMMEDIATE / COMMIT in _transaction
                check_same_thread=False,  # shared by the writer and the API's threads
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"retention.path: cannot use {root}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power cut may lose the last commits (their files then look
            # like debris and are reconciled away) but never corrupts the index.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            migrate(self._db, f"retention.path {root}")
        except sqlite3.Error as exc:
            self._db.close()
            raise ConfigError(f"retention.path: index {root / INDEX_NAME}: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock at BEGIN, so a select-then-delete cannot race a
        # label or an export mark committed by another connection in between.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the index."""
        with self._lock:
            self._db.close()

    def index_bytes(self) -> int:
        """Bytes of the index files (database, WAL, shared memory)."""
        total = 0
        for name in INDEX_FILES:
            with suppress(FileNotFoundError):
                total += (self.root / name).stat().st_size
        return total

    def count(self) -> int:
        """Retained frames."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM frames").fetchone()[0])

    # --- queries ------------------------------------------------------------------------------

    def get(self, frame_id: str) -> RetainedFrame | None:
        """The retained frame with this id, or ``None``."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM frames WHERE frame_id = ?", (frame_id,)
            ).fetchone()
        return None if row is None else frame_from_row(row)

    def list(
        self,
        camera: str | None = None,
        flagged: bool | None = None,
        label: Label | str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> builtins.list[RetainedFrame]:
        """Retained frames, newest first, one page at a time.

        Args:
            camera: Only this camera's.
            flagged: Only flagged (``True``) or only good (``False``) frames.
            label: Only frames with this label, or ``"unlabelled"`` for those without one.
            limit: Page size, 1 to 500.
            before: Keyset cursor: only frames retained before the one with this ``seq``
                (pass the last ``seq`` of the previous page).

        Raises:
            RetentionRequestError: A limit out of range or an unknown label.
        """
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise RetentionRequestError(f"limit must be 1 to {MAX_LIST_LIMIT}, got {limit}")
        clauses: builtins.list[str] = []
        params: builtins.list[object] = []
        if camera is not None:
            clauses.append("camera_id = ?")
            params.append(camera)
        if flagged is not None:
            clauses.append("is_anomalous = ?")
            params.append(int(flagged))
        if label == UNLABELLED:
            clauses.append("label IS NULL")
        elif label is not None:
            check_label(label, None, None)
            clauses.append("label = ?")
            params.append(label)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        # Only fixed fragments are joined into the statement; every value is a parameter.
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM frames {where} ORDER BY seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [frame_from_row(r) for r in rows]

    def frames(
        self, camera: str | None = None, since: datetime | None = None
    ) -> builtins.list[RetainedFrame]:
        """Every retained frame (of ``camera``, retained at or after ``since``), oldest first."""
        clauses = ["1"]
        params: builtins.list[object] = []
        if camera is not None:
            clauses.append("camera_id = ?")
            params.append(camera)
        if since is not None:
            clauses.append("retained_at >= ?")
            params.append(utc_text(since))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM frames WHERE {' AND '.join(clauses)} ORDER BY seq",
                params,
            ).fetchall()
        return [frame_from_row(r) for r in rows]

    def recent_scores(self, camera: str, limit: int) -> builtins.list[ScoredRow]:
        """The ``limit`` newest retained frames of ``camera``: score, threshold, verdict, label.

        Args:
            camera: The camera's id.
            limit: How many frames at most (the caller bounds it).
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT score, threshold, is_anomalous, label FROM frames WHERE camera_id = ? "
                "ORDER BY seq DESC LIMIT ?",
                (camera, limit),
            ).fetchall()
        return [ScoredRow(float(s), float(t), bool(a), label) for s, t, a, label in rows]

    def file_path(self, name: str | None) -> Path | None:
        """A retained file's path from its indexed name, if it is a file inside the folder."""
        if name is None:
            return None
        path = (self.root / name).resolve()
        # The index is ours, but a tampered row or a planted symlink must not leak a file.
        if not path.is_relative_to(self.files_root) or not path.is_file():
            return None
        return path

    def image_path(self, frame_id: str, view: View) -> Path | None:
        """The file of one view of a retained frame; ``None`` if it has none (or is unknown).

        Raises:
            RetentionRequestError: ``view`` is not ``frame``, ``overlay`` or ``mask``.
        """
        if view not in VIEWS:
            raise RetentionRequestError(f"view must be one of {', '.join(VIEWS)}")
        frame = self.get(frame_id)
        if frame is None:
            return None
        names = {"frame": frame.frame_file, "overlay": frame.overlay_file}
        return self.file_path(names.get(view, frame.mask_file))

    def counts_by_camera(self) -> dict[str, dict[Label, int]]:
        """Labelled frames per camera and label (every label present, zeros included)."""
        counts: dict[str, dict[Label, int]] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT camera_id, label, COUNT(*) FROM frames WHERE label IS NOT NULL "
                "GROUP BY camera_id, label ORDER BY camera_id"
            ).fetchall()
        for camera, label, n in rows:
            counts.setdefault(camera, {"false_alarm": 0, "defect": 0, "missed_defect": 0})
            counts[camera][label] = int(n)
        return counts

    # --- labels and exports -------------------------------------------------------------------

    def label(
        self, frame_id: str, label: Label | None, kind: str | None = None, note: str | None = None
    ) -> RetainedFrame:
        """Set (``label=None``: clear) a frame's label; it is then kept until exported again.

        Args:
            frame_id: The frame.
            label: ``false_alarm``, ``defect``, ``missed_defect`` or ``None``.
            kind: Defect kind (``scratch``...) of a ``defect`` / ``missed_defect`` label.
            note: Free text, at most 2000 characters.

        Raises:
            RetentionRequestError: An unknown label, a bad kind or a note too long.
            UnknownFrameError: No retained frame has this id.
        """
        check_label(label, kind, note)
        stamp = utc_text(self.clock()) if label is not None else None
        with self._transaction() as db:
            row = db.execute(
                # SET expressions see the old row: an unchanged label keeps its export mark.
                "UPDATE frames SET label = ?, label_kind = ?, note = ?, labelled_at = ?, "
                "exported_at = CASE WHEN label IS ? AND label_kind IS ? THEN exported_at END "
                f"WHERE frame_id = ? RETURNING {COLUMNS}",
                (label, kind, note, stamp, label, kind, frame_id),
            ).fetchone()
        if row is None:
            raise UnknownFrameError(f"no retained frame {frame_id[:64]!r}")
        return frame_from_row(row)

    def clear_label(self, frame_id: str) -> tuple[RetainedFrame, RetainedFrame | None]:
        """Remove a frame's label, kind and note: it is unlabelled, and evictable, again.

        Its export mark goes too, as for any change of label: the last export holds the label
        removed. A frame without a label is left as it is (clearing is idempotent).

        Returns:
            The frame as it is now, and as it was before when a label was removed (``None``:
            it had none, nothing changed).

        Raises:
            UnknownFrameError: No retained frame has this id.
        """
        with self._transaction() as db:
            # Read and cleared in one transaction: a label set meanwhile is never reported as
            # removed without being removed, nor removed without being reported.
            row = db.execute(
                f"SELECT {COLUMNS} FROM frames WHERE frame_id = ?", (frame_id,)
            ).fetchone()
            if row is None:
                raise UnknownFrameError(f"no retained frame {frame_id[:64]!r}")
            before = frame_from_row(row)
            if before.label is None:
                return before, None
            row = db.execute(
                "UPDATE frames SET label = NULL, label_kind = NULL, note = NULL, "
                f"labelled_at = NULL, exported_at = NULL WHERE seq = ? RETURNING {COLUMNS}",
                (before.seq,),
            ).fetchone()
        return frame_from_row(row), before

    def mark_exported(self, seqs: Iterable[int]) -> int:
        """Record that a dataset export included these frames (by ``seq``); rows marked."""
        stamp = utc_text(self.clock())
        with self._transaction() as db:
            cursor = db.executemany(
                "UPDATE frames SET exported_at = ? WHERE seq = ?", [(stamp, s) for s in seqs]
            )
            return int(cursor.rowcount)


__all__ = ["INDEX_FILES", "INDEX_NAME", "RetentionIndex", "utc_now"]
