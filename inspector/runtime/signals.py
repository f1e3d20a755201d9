"""Signals acted on by a thread of their own, as they arrive.

Python-level signal handlers run only when the main thread gets back to the interpreter, which
a blocking call (a Kafka client constructor looking for a broker: up to 30 s) can delay; a second
SIGTERM that should exit at once would wait too. The interpreter's C-level handler also writes
each signal's number to its wake-up file descriptor (``signal.set_wakeup_fd``) at once, so a
thread reading that pipe sees every signal immediately, whatever the main thread is doing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

#: What the daemon listens to: shutdown (twice: at once) and reload.
DAEMON_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def watch_signals(
    handler: Callable[[int], None], signals: Iterable[signal.Signals] = DAEMON_SIGNALS
) -> threading.Thread:
    """Call ``handler(signum)`` on a watcher thread for each of ``signals`` as it arrives.

    Must be called from the main thread (a requirement of :mod:`signal`). The signals' default
    actions (termination) are replaced; other signals keep theirs.

    Returns:
        The watcher thread (a daemon thread: it never holds the process open).
    """
    wanted = {int(sig) for sig in signals}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # a full pipe must never block the C-level handler
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for sig in wanted:
        # Only replaces the default action: the watcher does the work.
        signal.signal(sig, lambda signum, frame: None)

    def watch() -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            # The pipe also carries signals other code handles in Python: not ours to act on.
            for signum in (n for n in data if n in wanted):
                try:
                    handler(signum)
                except Exception:  # one bad signal handling must not end the watcher
                    log.exception("handling signal %d failed", signum)

    thread = threading.Thread(target=watch, name="inspector-signals", daemon=True)
    thread.start()
    return thread
