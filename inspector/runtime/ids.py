"""Ids that arrive from producers (camera ids, frame ids): validated before anything uses them.

A producer may put anything in a header or key: kilobytes, control characters, invalid UTF-8.
Such text must never reach a metric label, a log line or a result unchecked: a 64 KiB key
would be echoed into every scrape, a newline would forge log lines. A leaf module.
"""

from __future__ import annotations

import hashlib

#: Longest id kept as given (characters). Real camera ids and serials are far shorter.
MAX_ID_CHARS = 128
#: How much of an invalid id a log line may show (as ``repr``, so control characters are
#: escaped).
_LOG_CHARS = 32


def valid_id(text: str) -> bool:
    """Whether ``text`` may be used as given: 1..128 printable characters, no whitespace.

    Letters of any script are fine (``Kamera-Süd``); control characters, whitespace, the
    replacement character of undecodable bytes and anything too long are not.
    """
    return (
        0 < len(text) <= MAX_ID_CHARS
        and text.isprintable()
        and not any(ch.isspace() or ch == "\ufffd" for ch in text)
    )


def replacement_id(raw: bytes) -> str:
    """A stable stand-in for an invalid id: ``invalid-`` and 8 hex digits of its hash.

    The same bad id always maps to the same stand-in, so one misconfigured camera's frames stay
    together, and the raw bytes are never echoed.
    """
    return "invalid-" + hashlib.blake2b(raw, digest_size=4).hexdigest()


def for_log(text: str | bytes) -> str:
    """A short, escaped rendering of untrusted text for a log line."""
    shown = text[:_LOG_CHARS]
    more = f"... ({len(text)} in all)" if len(text) > _LOG_CHARS else ""
    return f"{shown!r}{more}"
