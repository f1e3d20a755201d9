"""One backoff and one rate-limited logger for every retry and repeated warning."""

from __future__ import annotations

import logging

import pytest

from inspector.runtime.pacing import Backoff, RateLimitedLog, ThirdPartyLogLimit


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5
    assert [backoff.after(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_only_shortens() -> None:
    backoff = Backoff(1.0, 8.0, jitter=0.1, rng=lambda: 1.0)
    assert backoff.next() == pytest.approx(0.9)
    assert backoff.current == 2.0  # the schedule itself is not jittered


def test_rate_limited_log_counts_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    warnings = RateLimitedLog(logging.getLogger("pacing-test"), 10.0, lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="pacing-test"):
        assert warnings.warning("down: %s", "a")
        now[0] = 5.0
        assert not warnings.warning("down: %s", "b")
        assert not warnings.warning("down: %s", "c")
        now[0] = 10.0
        assert warnings.warning("down: %s", "d")
        warnings.reset()
        assert warnings.warning("down: %s", "e")
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [
        ("WARNING", "down: a"),
        ("DEBUG", "down: b"),
        ("DEBUG", "down: c"),
        ("WARNING", "down: d (2 similar message(s) since the last)"),
        ("WARNING", "down: e"),
    ]


def test_a_librarys_repeated_warnings_are_limited_per_template() -> None:
    now = [0.0]
    limit = ThirdPartyLogLimit("kafka", 60.0, lambda: now[0])

    def record(name: str, msg: str, arg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (arg,), None)

    refused = "Connection failed: %s"
    assert limit.filter(record("kafka.net.manager", refused, "ECONNREFUSED"))
    assert not limit.filter(record("kafka.net.manager", refused, "ECONNREFUSED"))
    assert limit.filter(record("kafka.cluster", "Metadata refresh: failed %s", "x"))  # another
    assert limit.filter(record("inspector.daemon", refused, "ours"))  # not the library's
    assert limit.filter(record("inspector.daemon", refused, "ours"))
    assert limit.filter(record("kafkaesque", refused, "x"))  # only kafka and its children
    now[0] = 60.0
    assert limit.filter(record("kafka.net.manager", refused, "ECONNREFUSED"))
