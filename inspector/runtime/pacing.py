"""Pacing of retries and of repeated warnings: one backoff and one rate-limited logger.

A daemon that waits for a camera, a broker or a sink for a day must neither hammer it nor fill
its log with a line per attempt. A leaf of the runtime.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable


class Backoff:
    """Exponential backoff: ``first_s``, doubling up to ``max_s``, optionally jittered.

    Args:
        first_s: The first delay.
        max_s: The longest delay.
        jitter: Each delay is shortened by up to this fraction at random, so that many clients
            behind one outage do not retry in lockstep (0: exact).
        rng: Uniform 0..1 numbers (tests pass a fixed one).
    """

    def __init__(
        self,
        first_s: float,
        max_s: float,
        *,
        jitter: float = 0.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.jitter = jitter
        self._rng = rng
        self._current = first_s

    @property
    def current(self) -> float:
        """The delay :meth:`next` returns next (before jitter)."""
        return self._current

    def next(self) -> float:
        """The delay to wait now; the one after it is twice as long (up to ``max_s``)."""
        delay = self._current * (1.0 - self.jitter * self._rng())
        self._current = min(self._current * 2, self.max_s)
        return delay

    def reset(self) -> None:
        """Start again from ``first_s`` (after a success)."""
        self._current = self.first_s

    def after(self, failures: int) -> float:
        """The delay after ``failures`` failures in a row, without state or jitter."""
        return float(min(self.first_s * 2 ** max(0, failures), self.max_s))


class RateLimitedLog:
    """Logs a warning at most once per interval; the next says how many were left out.

    Args:
        logger: Where to log.
        every_s: Shortest time between two warnings; those in between go to DEBUG.
        clock: Monotonic clock.
    """

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> bool:
        """Warn now, or log at DEBUG if the last warning is too recent; ``True`` if warned."""
        return self._log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> bool:
        """:meth:`warning` at ERROR: for what needs an operator (a setting to fix)."""
        return self._log(logging.ERROR, msg, *args)

    def _log(self, level: int, msg: str, *args: object) -> bool:
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self.every_s:
                self._suppressed += 1
                warn = False
            else:
                suppressed, self._suppressed, self._last = self._suppressed, 0, now
                warn = True
        if not warn:
            self.logger.debug(msg, *args)
        elif suppressed:
            self.logger.log(
                level, msg + " (%d similar message(s) since the last)", *args, suppressed
            )
        else:
            self.logger.log(level, msg, *args)
        return warn

    def reset(self) -> None:
        """The next warning is logged at once (a new outage)."""
        with self._lock:
            self._last = None
            self._suppressed = 0


class ThirdPartyLogLimit(logging.Filter):
    """Lets a library's warnings through at most once per interval per message template.

    With no broker, kafka-python logs a connection error every few hundred milliseconds (66
    ERROR and WARNING lines in 30 s) before the daemon's own message says what is wrong and
    what to do. Installed on the console handler; ``-v`` shows everything.

    Args:
        prefix: Logger names it applies to (``kafka`` covers ``kafka.net.connection``...).
        every_s: Shortest time between two records of one template.
        clock: Monotonic clock.
    """

    def __init__(
        self, prefix: str, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.every_s = every_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """``False`` for a repeat within the interval of a record of the same template."""
        if not (record.name == self.prefix or record.name.startswith(self.prefix + ".")):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                return False
            if len(self._last) > 1000:  # templates, not values: a bound that is never reached
                self._last.clear()
            self._last[key] = now
            return True
