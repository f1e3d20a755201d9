"""Log lines cannot be forged: every record is one escaped line, tracebacks keep theirs."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inspector.logs import LOG_FORMAT, EscapingFormatter, console_handler, escape_controls

LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("inspector.test_logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = console_handler(stream)
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("cam\ninspector stopped: forged", "cam\\ninspector stopped: forged"),
        ("a\r\nb", "a\\r\\nb"),
        ("nul\x00byte", "nul\\x00byte"),
        ("del\x7f c1\x85 csi\x9b", "del\\x7f c1\\x85 csi\\x9b"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("lone\ud800", "lone\\ud800"),
        ("Kamera-Süd ключ 😀", "Kamera-Süd ключ 😀"),
    ],
)
def test_escape_controls(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


def test_escape_controls_cuts_long_text_and_says_how_long() -> None:
    assert escape_controls("y" * 1000, 10) == "yyyyyyyyyy... (1000 characters in all)"


@given(st.text())
def test_any_text_becomes_one_writable_line(text: str) -> None:
    shown = escape_controls(text)
    assert len(shown.splitlines()) <= 1 and shown.isprintable()
    shown.encode("utf-8")  # no surrogate left: any UTF-8 stream can write it


def test_every_record_is_one_line_and_tracebacks_keep_their_lines(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = captured
    log.warning("control: %s removed source %s", "10.0.0.1", "cam\ninspector stopped: forged")
    log.info("id %r and %s", "a\x00b", "c\u2028d")
    try:
        raise ValueError("the reason")
    except ValueError:
        log.exception("failed for %s", "x\ny")
    lines = stream.getvalue().splitlines()
    starts = [line for line in lines if LINE_START.match(line)]
    assert len(starts) == 3  # one line per record; a forged line would add a fourth
    assert not any(line.startswith("inspector stopped") for line in lines)
    assert "cam\\ninspector stopped: forged" in starts[0]
    assert "\x00" not in stream.getvalue() and "\\x00" in starts[1]
    assert starts[2].endswith("failed for x\\ny")
    # The traceback follows its record on lines of its own, as Python writes it.
    after = lines[lines.index(starts[2]) + 1 :]
    assert after[0] == "Traceback (most recent call last):"
    assert after[-1] == "ValueError: the reason"


def test_the_formatter_leaves_printable_lines_as_logging_writes_them() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("text",), None)
    assert EscapingFormatter(LOG_FORMAT).format(record) == logging.Formatter(LOG_FORMAT).format(
        record
    )


@pytest.mark.component  # runs `inspector` in a subprocess
def test_the_command_line_installs_the_escaping_formatter() -> None:
    # The daemon's logging is the command line's: a record logged after its setup is escaped.
    script = (
        "import logging\n"
        "from inspector import cli\n"
        "cli.main(['schema'])\n"
        "logging.getLogger('inspector.runtime.control.api')"
        ".warning('id %s', 'cam\\ninspector stopped')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stderr.splitlines()[-1].endswith("id cam\\ninspector stopped")
    assert not any(line.startswith("inspector stopped") for line in done.stderr.splitlines())
