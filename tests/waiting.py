"""The one way tests wait for something another thread or process does: poll a condition.

A fixed ``time.sleep`` followed by an exact assert is either slow (the sleep is long enough for a
loaded CI machine) or flaky (it is not); :func:`wait_until` returns as soon as the condition
holds and fails with what was awaited when it never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: The first pause between two looks at the condition (seconds); each next one is twice as long...
FIRST_PAUSE_S = 0.005
#: ...up to this: a condition that holds at once costs no sleep, and a long wait asks an HTTP
#: endpoint or a broker's admin API at most ten times a second.
LONGEST_PAUSE_S = 0.1


def wait_until(
    condition: Callable[[], object],
    timeout: float = 30.0,
    what: str = "the condition",
    *,
    step: Callable[[], object] | None = None,
) -> float:
    """Poll ``condition`` until it is truthy; the seconds that took.

    Args:
        condition: Looked at once, then after pauses of 5 ms growing to 100 ms; truthy ends
            the wait.
        timeout: Seconds until the wait fails (one last look is taken at the deadline).
        what: Names the condition in the failure message ("partition 0 committed at 3").
        step: Called between looks instead of pausing, for a condition that advances only
            while the test drives it (``lambda: consumer.poll(100)``).

    Raises:
        AssertionError: ``condition`` was still false after ``timeout`` seconds.
    """
    started = time.monotonic()
    deadline = started + timeout
    pause = FIRST_PAUSE_S
    while not condition():
        now = time.monotonic()
        if now >= deadline:
            if condition():  # the last look, so that a slow step cannot cost the wait
                break
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        if step is not None:
            step()
        else:
            time.sleep(min(pause, deadline - now))
            pause = min(2 * pause, LONGEST_PAUSE_S)
    return time.monotonic() - started
