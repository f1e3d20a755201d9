"""Opening the files a client or the configuration names, refusing what is not a regular file.

A path that comes from outside (``POST /v1/models``, ``model.checkpoint``, an export folder,
``daemon.state_path``) may name anything: ``/dev/zero`` reads without end, a FIFO blocks the
reader until someone writes, a directory is not data. Every such file is opened here, without
blocking (``O_NONBLOCK``: opening a FIFO waits for a writer otherwise) and checked *on the open
descriptor* (``fstat`` after following symlinks, then ``S_ISREG``), so a path swapped between a
check and the read cannot slip through. A regular file's size is known before anything is read,
so what the callers read is bounded by it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from inspector.errors import InspectorError

#: Builds the caller's error (a CheckpointError, an ExportError...) from a message.
ErrorFactory = Callable[[str], InspectorError]


def describe_mode(mode: int) -> str:
    """What a file of ``st_mode`` is, in words (``a directory``, ``a FIFO (named pipe)``...)."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def open_regular(path: Path, error: ErrorFactory, what: str) -> tuple[BinaryIO, int]:
    """Open ``path`` for reading if it is a regular file (after symlinks); return it and its size.

    Args:
        path: The file.
        error: Makes the error raised when it is not a regular file.
        what: What the file should be, for the message (``checkpoint``, ``state file``...).

    Returns:
        The open file (the caller closes it) and its size in bytes at opening.

    Raises:
        OSError: It cannot be opened (missing, no permission): the caller says what it is.
        InspectorError: From ``error``: a directory, FIFO, device or socket.
    """
    # O_NONBLOCK: opening a FIFO for reading would wait for a writer, with the caller's thread
    # (an HTTP worker, the daemon's start) stuck in the open() call.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(
                f"{path} is {describe_mode(info.st_mode)}, not a regular file: a {what} must be "
                "a regular file (or a symlink to one); nothing was read"
            )
        os.set_blocking(fd, True)  # a regular file never blocks; plain reads from here on
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, error: ErrorFactory, what: str, max_bytes: int) -> bytes:
    """The whole of a regular file of at most ``max_bytes`` bytes.

    Args:
        path: The file.
        error: Makes the error raised when it is not a regular file or too large.
        what: What the file should be, for the message.
        max_bytes: The largest such file that makes sense (a JSON file of a few kB: MiBs).

    Raises:
        OSError: It cannot be opened or read.
        InspectorError: From ``error``: not a regular file, or larger than ``max_bytes``.
    """
    fh, size = open_regular(path, error, what)
    with fh:
        # Read one byte more than allowed: a file growing after fstat is caught too.
        data = fh.read(max_bytes + 1) if size <= max_bytes else b""
    if size > max_bytes or len(data) > max_bytes:
        raise error(
            f"{path} is {max(size, len(data))} bytes, more than a {what} can be "
            f"({max_bytes} bytes at most): not one; refused"
        )
    return data
