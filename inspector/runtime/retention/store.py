"""Retained frames on disk: files in a bounded folder, indexed in SQLite, crash-safe.

Layout of the folder (the store owns it; nothing else may write there)::

    index.sqlite3 (+ -wal, -shm)        the index (WAL mode, versioned schema)
    files/<k[:2]>/<k>.frame.<ext>       the frame: Kafka payload as received, or PNG/JPEG
    files/<k[:2]>/<k>.overlay.jpg       heat map over the frame (frames with a map)
    files/<k[:2]>/<k>.mask.png          predicted defect mask, 0/255 (frames with a mask)
    files/<k[:2]>/<k>.result.json       the result message as published

``k`` is a hash of the frame id (:mod:`inspector.runtime.retention.files`); ids are SQL
parameters only, never part of a statement.

Crash safety: a frame's files are written under temporary names, fsynced and renamed, and only
then is its row inserted, in one transaction. Eviction deletes rows first and files after. So a
crash at any point leaves at most files without a row, never a row without its files;
:meth:`RetentionStore.reconcile` (run on open) deletes such files, and rows whose files went
missing all the same.

Bounds: the files plus the index stay within ``max_bytes``; frames retained longer than
``max_age_s`` ago go. Frames are evicted oldest first, skipping labelled frames that were not
exported yet: those are kept whatever their age, and a new frame is dropped (as ``full``) when
they alone fill the folder. Once exported, a labelled frame is evicted like any other.
"""

from __future__ import annotations

import builtins
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from inspector.errors import ConfigError
from inspector.runtime.retention.files import (
    prune_empty_folders,
    scan_files,
    unlink_quietly,
    write_frame_files,
)
from inspector.runtime.retention.reader import RetentionIndex, utc_now
from inspector.runtime.retention.records import (
    COLUMNS,
    DropReason,
    RetainedFrame,
    RetentionDroppedError,
    RetentionItem,
    frame_from_row,
    utc_text,
)

log = logging.getLogger(__name__)

#: Frames that may be evicted: unlabelled, or labelled and already exported.
_EVICTABLE = "(label IS NULL OR exported_at IS NOT NULL)"
_FULL = "labelled frames awaiting a dataset export fill retention.max_bytes"
#: The owner's lock file, in the folder (empty; outside ``files/``, so never debris).
OWNER_LOCK = "owner.lock"


@dataclass(frozen=True)
class ReconcileReport:
    """What :meth:`RetentionStore.reconcile` removed.

    Attributes:
        files_removed: Files (temporary ones included) that no row referenced.
        rows_removed: Rows one of whose files was missing.
    """

    files_removed: int
    rows_removed: int


class RetentionStore(RetentionIndex):
    """The retention folder as its owner sees it: retain, evict, reconcile (and query).

    Only one store may own a folder at a time (the daemon): it holds an exclusive lock on
    ``owner.lock`` until closed (or until its process dies), since a second owner's reconcile
    would delete the first one's frames in the making. Other processes open a
    :class:`~inspector.runtime.retention.reader.RetentionIndex`. Thread-safe, but frames are
    meant to be retained from one writer thread.

    Args:
        root: The folder (created if missing).
        max_bytes: Bound on the retained files plus the index.
        max_age_s: Frames retained longer ago are evicted; ``None``: no age bound.
        clock: Current UTC time.

    Raises:
        ConfigError: The folder or its index cannot be opened or reconciled, another process
            owns the folder, or the index is from a newer inspector.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        max_age_s: float | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(root, clock=clock)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._files_bytes = 0
        self._owner_fd: int | None = None
        try:
            self._owner_fd = _lock_owner(root / OWNER_LOCK)
            report = self.reconcile()
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise ConfigError(f"retention.path: cannot use {root}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        if report.files_removed or report.rows_removed:
            log.warning(
                "retention: removed %d file(s) without an index row and %d row(s) with missing "
                "files in %s (writes interrupted by a crash)",
                report.files_removed,
                report.rows_removed,
                root,
            )

    def close(self) -> None:
        """Close the index and give up the folder."""
        super().close()
        with self._lock:
            fd, self._owner_fd = self._owner_fd, None
        if fd is not None:
            os.close(fd)  # releases the lock

    # --- sizes --------------------------------------------------------------------------------

    @property
    def file_bytes(self) -> int:
        """Bytes of the retained files, as indexed."""
        with self._lock:
            return self._files_bytes

    @property
    def total_bytes(self) -> int:
        """Retained files plus index: what ``max_bytes`` bounds."""
        return self.file_bytes + self.index_bytes()

    def _sum_bytes(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM frames").fetchone()
        return int(row[0])

    # --- writing ------------------------------------------------------------------------------

    def retain(self, item: RetentionItem) -> RetainedFrame:
        """Write a frame's files and then its row, evicting first what the bounds require.

        A frame id already retained is not written again (a redelivered frame): its row is
        returned unchanged.

        Raises:
            RetentionDroppedError: ``too_large`` (it alone exceeds the bound), ``full`` (labelled
                frames awaiting export fill the bound), ``disk_error`` (a file or the index
                cannot be written), ``encode_error`` (a name or id that cannot be stored).
        """
        try:
            existing = self.get(item.frame_id)
        except UnicodeEncodeError as exc:  # lone surrogates: not storable as SQLite text
            raise RetentionDroppedError("encode_error", f"frame id not storable: {exc}") from exc
        if existing is not None:
            return existing
        size = item.size_bytes
        self.evict_expired()
        if size + self.index_bytes() > self.max_bytes:
            raise RetentionDroppedError(
                "too_large", f"{size} bytes do not fit retention.max_bytes={self.max_bytes}"
            )
        self._make_room(size)
        names = write_frame_files(self.root, item)
        try:
            with self._transaction() as db:
                row = db.execute(
                    "INSERT INTO frames (frame_id, camera_id, score, threshold, is_anomalous, "
                    "model_name, captured_at, processed_at, frame_file, overlay_file, mask_file, "
                    "result_file, bytes, retained_at) "
                    f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}",
                    (
                        item.frame_id,
                        item.camera_id,
                        item.score,
                        item.threshold,
                        int(item.is_anomalous),
                        item.model_name,
                        item.captured_at,
                        item.processed_at,
                        *names,
                        size,
                        utc_text(self.clock()),
                    ),
                ).fetchone()
                self._files_bytes += size
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            unlink_quietly(self.root, (n for n in names if n is not None))
            reason: DropReason = (
                "encode_error" if isinstance(exc, UnicodeEncodeError) else "disk_error"
            )
            raise RetentionDroppedError(reason, f"index row not written: {exc}") from exc
        # The insert grew the index. The new frame is the newest, so it is evicted last: only
        # when nothing else may go, and then it is dropped after all.
        self._make_room(0)
        if self.get(item.frame_id) is None:
            raise RetentionDroppedError("full", _FULL)
        return frame_from_row(row)

    def _make_room(self, incoming: int) -> None:
        while (excess := self.total_bytes + incoming - self.max_bytes) > 0:
            if not self._evict_oldest(excess):
                raise RetentionDroppedError("full", _FULL)

    def _evict_oldest(self, excess: int) -> int:
        """Evict evictable frames, oldest first, until ``excess`` bytes are freed; how many."""
        victims: builtins.list[tuple[int, str, str | None, str | None, str, int]] = []
        with self._transaction() as db:
            freed = 0
            rows = db.execute(
                "SELECT seq, frame_file, overlay_file, mask_file, result_file, bytes "
                f"FROM frames WHERE {_EVICTABLE} ORDER BY seq"
            )
            for row in rows:
                victims.append(row)
                freed += int(row[5])
                if freed >= excess:
                    break
            rows.close()
            db.executemany("DELETE FROM frames WHERE seq = ?", [(v[0],) for v in victims])
            self._files_bytes -= freed
        # Rows first, files after: a crash in between leaves files only, found as debris.
        unlink_quietly(self.root, (n for v in victims for n in v[1:5] if isinstance(n, str)))
        return len(victims)

    def evict_expired(self) -> int:
        """Evict evictable frames retained more than ``max_age_s`` ago; how many went."""
        if self.max_age_s is None:
            return 0
        cutoff = utc_text(self.clock() - timedelta(seconds=self.max_age_s))
        with self._transaction() as db:
            rows = db.execute(
                f"DELETE FROM frames WHERE retained_at < ? AND {_EVICTABLE} "
                "RETURNING frame_file, overlay_file, mask_file, result_file, bytes",
                (cutoff,),
            ).fetchall()
            self._files_bytes -= sum(int(r[4]) for r in rows)
        unlink_quietly(self.root, (n for r in rows for n in r[:4] if n is not None))
        return len(rows)

    def reconcile(self) -> ReconcileReport:
        """Make files and index agree: drop rows with missing files, then files with no row.

        Run on open. Only the folder's owner may run it, with no write in progress: a frame
        being written has files and no row yet, exactly like a crash's debris.
        """
        with self._lock:
            on_disk, links = scan_files(self.root)
            with self._transaction() as db:
                rows = db.execute(
                    "SELECT seq, frame_file, overlay_file, mask_file, result_file FROM frames"
                ).fetchall()
                broken = {r[0] for r in rows if any(n and n not in on_disk for n in r[1:])}
                db.executemany("DELETE FROM frames WHERE seq = ?", [(s,) for s in broken])
            referenced = {n for r in rows if r[0] not in broken for n in r[1:] if n}
            debris = sorted(on_disk - referenced)
            unlink_quietly(self.root, debris)
            for link in links:
                link.unlink(missing_ok=True)
            prune_empty_folders(self.root)
            self._files_bytes = self._sum_bytes()
        return ReconcileReport(len(debris) + len(links), len(broken))


def _lock_owner(path: Path) -> int:
    """Take the folder's exclusive owner lock; the descriptor holding it.

    Raises:
        ConfigError: Another process (or store) holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"retention.path: {path.parent} is in use by another inspector process; "
            "give each daemon its own folder"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


__all__ = ["OWNER_LOCK", "ReconcileReport", "RetentionStore"]
