"""The files of retained frames: names from a hash, crash-safe writes, a scan for debris.

Every file lives under ``<root>/files/<k[:2]>/`` where ``k`` is a hash of the frame id, so a
producer's id (``../../etc/passwd``, ``'; DROP TABLE frames; --``) never names a file; the
frame's suffix comes from a fixed allow-list (:data:`FRAME_SUFFIXES`). The two-character fan-out
keeps folders small at hundreds of thousands of frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from inspector.runtime.retention.records import FRAME_SUFFIXES, RetentionDroppedError, RetentionItem

log = logging.getLogger(__name__)

FILES_DIR = "files"
#: Prefix of a file being written; a leftover one (a crash) is debris for the reconcile.
TMP_PREFIX = ".tmp-"

#: The names a frame's files take, relative to the retention folder.
FrameNames = tuple[str, str | None, str | None, str]


def file_key(frame_id: str) -> str:
    """The file name stem of a frame: 32 hex digits (128 bits) of SHA-256 of its id."""
    return hashlib.sha256(frame_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def frame_names(item: RetentionItem) -> FrameNames:
    """Where ``item``'s frame, overlay, mask and result go (``None``: it has no such file).

    Raises:
        RetentionDroppedError: ``encode_error``: a frame suffix outside the allow-list.
    """
    if item.frame_suffix not in FRAME_SUFFIXES:
        raise RetentionDroppedError("encode_error", f"frame suffix {item.frame_suffix!r} refused")
    key = file_key(item.frame_id)
    prefix = f"{FILES_DIR}/{key[:2]}/{key}"
    return (
        f"{prefix}.frame{item.frame_suffix}",
        f"{prefix}.overlay.jpg" if item.overlay is not None else None,
        f"{prefix}.mask.png" if item.mask is not None else None,
        f"{prefix}.result.json",
    )


def write_frame_files(root: Path, item: RetentionItem) -> FrameNames:
    """Write ``item``'s files durably: each to a temporary name, fsynced, renamed; then the folder.

    On failure the files already written are removed again (a crash leaves them, and temporary
    files, for :func:`scan_files` to find as debris).

    Returns:
        Their names, relative to ``root``.

    Raises:
        RetentionDroppedError: ``disk_error`` when a file cannot be written, ``encode_error`` for a
            suffix outside the allow-list.
    """
    names = frame_names(item)
    contents = (item.frame, item.overlay, item.mask, item.result)
    written: list[str] = []
    try:
        (root / names[0]).parent.mkdir(parents=True, exist_ok=True)
        for name, data in zip(names, contents, strict=True):
            if name is not None and data is not None:
                write_atomically(root / name, data)
                written.append(name)
        fsync_directory((root / names[0]).parent)  # the renames must survive a power cut too
    except OSError as exc:
        unlink_quietly(root, written)
        raise RetentionDroppedError("disk_error", f"files not written: {exc}") from exc
    return names


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name next to ``path``, fsync it, rename it to ``path``.

    Raises:
        OSError: It cannot be written (the temporary file is removed).
    """
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_directory(folder: Path) -> None:
    """Make the names created in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(root: Path, names: Iterable[str]) -> None:
    """Delete files (relative to ``root``); a failure is logged and left for the reconcile."""
    for name in names:
        try:
            (root / name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("retention: cannot delete %s: %s", name, exc.strerror or exc)


def scan_files(root: Path) -> tuple[set[str], list[Path]]:
    """Every file under ``root/files`` (names relative to ``root``), and symlinked folders.

    Symlinked folders are never the store's own: returned apart, so the caller deletes the
    link without following it.
    """
    found: set[str] = set()
    links: list[Path] = []
    for folder, dirs, files in os.walk(root / FILES_DIR):  # never follows symlinks
        here = Path(folder)
        links.extend(here / d for d in dirs if (here / d).is_symlink())
        found.update((here / f).relative_to(root).as_posix() for f in files)
    return found, links


def prune_empty_folders(root: Path) -> None:
    """Remove the fan-out folders that eviction left empty."""
    base = root / FILES_DIR
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        if folder.is_dir() and not folder.is_symlink():
            with contextlib.suppress(OSError):  # not empty: in use
                folder.rmdir()


__all__ = [
    "FILES_DIR",
    "TMP_PREFIX",
    "FrameNames",
    "file_key",
    "frame_names",
    "fsync_directory",
    "prune_empty_folders",
    "scan_files",
    "unlink_quietly",
    "write_atomically",
    "write_frame_files",
]
