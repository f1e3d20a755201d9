"""Log lines that untrusted text cannot forge: one escaping rule for every record.

Ids, paths and error messages from the control API, producers and files reach log messages;
a newline in one would write a forged line (``inspector stopped: ...``) and a NUL byte makes
the log binary to ``grep``. Rather than every call site remembering to escape what it logs,
:class:`EscapingFormatter` escapes the rendered message of every record, whatever logger wrote
it (uvicorn's and kafka-python's included); the command line installs it
(:func:`console_handler`). A traceback appended to a record keeps its own lines.

A leaf module: it imports nothing of inspector.
"""

from __future__ import annotations

import logging
from typing import TextIO

#: The daemon's log line: time, level, logger, message.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Short escapes for the control characters people recognise.
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_controls(text: str, limit: int | None = None) -> str:
    r"""``text`` with every unprintable character escaped, optionally cut to ``limit`` characters.

    Escaped are control characters (C0 such as ``\n``, ``\r`` and NUL, DEL, C1 such as
    U+0085), the line and paragraph separators U+2028/2029, format characters (bidirectional
    overrides), whitespace other than the space, surrogates (which cannot be written as UTF-8)
    and unassigned code points: what ``str.isprintable`` refuses. Letters of any script stay
    as they are. The result is one line that any UTF-8 stream can write.

    Args:
        text: Untrusted text.
        limit: Longest result before ``... (N characters in all)`` is appended; ``None``: no
            limit.
    """
    shown = text if limit is None else text[:limit]
    if not shown.isprintable():  # the common case, printable text, costs one C-level scan
        shown = "".join(ch if ch.isprintable() else _escaped(ch) for ch in shown)
    if limit is not None and len(text) > limit:
        shown = f"{shown}... ({len(text)} characters in all)"
    return shown


class EscapingFormatter(logging.Formatter):
    """A formatter whose rendered line (message included) is always one escaped line.

    Only the line made from the format string is escaped; a record's traceback and stack are
    appended afterwards by :meth:`logging.Formatter.format`, with their own line structure.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The record's line, control characters of its message (and any field) escaped."""
        return escape_controls(super().formatMessage(record))


def console_handler(stream: TextIO | None = None) -> logging.StreamHandler[TextIO]:
    """The daemon's console handler: :data:`LOG_FORMAT` lines through :class:`EscapingFormatter`.

    Args:
        stream: Where lines go (default ``sys.stderr``).
    """
    handler: logging.StreamHandler[TextIO] = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    return handler
