"""Ids: one rule for every id the daemon is given, and safe renderings of untrusted text.

An id (a camera id, a source id, a model name, a recipe key) arrives from the YAML file, the
control API, a Kafka header or the state file, and is later addressed as one URL path segment
(``/v1/sources/{id}``), used as a metric label and written to logs. One rule, :func:`valid_id`,
decides them all; :data:`Id` is that rule as a pydantic type, so every model that holds an id
refuses a bad one with a 422 (API) or a config error naming the field.

A producer may put anything in a header or key: kilobytes, control characters, invalid UTF-8.
Such text must never reach a metric label, a log line or a result unchecked: a 64 KiB key
would be echoed into every scrape, a newline would forge log lines.

A leaf module: it imports pydantic and nothing of inspector.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

#: Longest id kept as given (characters). Real camera ids and serials are far shorter.
MAX_ID_CHARS = 128
#: How much of an invalid id a log line may show (as ``repr``, so control characters are
#: escaped).
_LOG_CHARS = 32
#: Printable characters an id may not hold: the space, and what a URL path segment cannot
#: carry as itself (``/`` splits it, ``?`` and ``#`` end it, ``%`` and ``\`` are read as
#: escapes or separators by clients and proxies); U+FFFD marks undecodable producer bytes.
_NOT_IN_IDS = frozenset(" /\\?#%\ufffd")
#: Path segments that clients and proxies resolve away (``/v1/sources/..`` is ``/v1/``).
_DOT_SEGMENTS = frozenset({".", ".."})

#: The rule in words, for error messages and the API's documentation.
ID_RULE = (
    f"an id is 1 to {MAX_ID_CHARS} printable characters without whitespace, control "
    "characters or any of / \\ ? # %, and is not . or .. (letters of any script are fine, "
    "e.g. Kamera-Süd)"
)


def valid_id(text: str) -> bool:
    """Whether ``text`` is a valid id: the one rule for every id (see :data:`ID_RULE`).

    Every accepted id can be addressed as one URL path segment and written to a log line or a
    metric label as it is. Fast enough for every Kafka record (string methods in C).
    """
    # isprintable() is False for every whitespace character but the space, for control
    # characters (C0, C1), U+2028/2029, surrogates and unassigned code points.
    return (
        0 < len(text) <= MAX_ID_CHARS
        and text.isprintable()
        and _NOT_IN_IDS.isdisjoint(text)
        and text not in _DOT_SEGMENTS
    )


def id_problem(text: str) -> str | None:
    """What is wrong with ``text`` as an id (never echoing it), or ``None`` when it is valid."""
    if valid_id(text):
        return None
    if not text:
        return "it is empty"
    if len(text) > MAX_ID_CHARS:
        return f"it has {len(text)} characters, more than {MAX_ID_CHARS}"
    if text in _DOT_SEGMENTS:
        return "it is a dot segment, which URLs resolve away"
    for ch in text:
        if ch.isspace():
            return f"it contains whitespace (U+{ord(ch):04X})"
        if ch == "\ufffd":
            return "it contains U+FFFD (bytes that were not UTF-8)"
        if ch in _NOT_IN_IDS:
            return f"it contains {ch!r}, which cannot be part of one URL path segment"
        if not ch.isprintable():
            return f"it contains a control or unprintable character (U+{ord(ch):04X})"
    raise AssertionError("valid_id and id_problem disagree")  # pragma: no cover


def _checked_id(text: str) -> str:
    problem = id_problem(text)
    if problem is not None:
        raise ValueError(f"not a valid id: {problem}; {ID_RULE}: rename it, e.g. line1-cam2")
    return text


#: A string that follows the id rule: for every model field, dictionary key and path parameter
#: that holds an id. The length bounds run first, so a megabyte of text is refused unread.
#: The published schema carries the rule in words and as a pattern (which cannot say
#: "printable"; the daemon checks that too).
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS),
    AfterValidator(_checked_id),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_CHARS,
            "pattern": r"^(?!\.\.?$)[^\s\x00-\x1f\x7f-\x9f/\\?#%\ufffd]+$",
            "description": ID_RULE,
        }
    ),
]


def valid_frame_id(text: str) -> bool:
    """Whether a producer's frame id may be used as given: 1..128 printable, no whitespace.

    Looser than :func:`valid_id`: a frame id is never a path segment, only a name carried into
    results (where a producer's ``line1/cam2/000042`` must survive, to match its frames with
    their results), logs and dead letters, so ``/``, ``?``, ``#`` and ``%`` are kept.
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
