"""A retention writer run as a subprocess by test_retention.py, to be killed with SIGKILL.

Usage: ``python retention_writer.py ROOT MAX_BYTES GENERATION [--crash-after-files]``

Retains frames ``g<GENERATION>-<i>`` into ROOT forever (labelling and exporting some, so
label updates and both kinds of eviction run too), printing ``i`` after each. Every frame's
bytes follow from its id (:func:`payload`), so the test can tell a torn file from a whole one.
With ``--crash-after-files`` it writes one frame's files, prints ``files``, and kills itself
before the row is inserted: the moment a crash leaves files without a row.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

from inspector.runtime.retention.files import write_frame_files
from inspector.runtime.retention.records import RetentionDroppedError, RetentionItem
from inspector.runtime.retention.store import RetentionStore


def payload(frame_id: str, what: str) -> bytes:
    """Deterministic content of one of a frame's files, 20 to 120 KB."""
    seed = hashlib.sha256(f"{what}:{frame_id}".encode()).digest()
    size = 20_000 + int.from_bytes(seed[:4], "big") % 100_000
    return (seed * (size // len(seed) + 1))[:size]


def item(frame_id: str) -> RetentionItem:
    """The frame the writer retains under ``frame_id``."""
    return RetentionItem(
        frame_id=frame_id,
        camera_id="cam-" + frame_id[-1],
        score=0.9,
        threshold=0.5,
        is_anomalous=True,
        model_name="m",
        captured_at=None,
        processed_at="2025-01-01T00:00:00+00:00",
        frame=payload(frame_id, "frame"),
        frame_suffix=".png",
        overlay=payload(frame_id, "overlay"),
        mask=payload(frame_id, "mask"),
        result=payload(frame_id, "result"),
    )


def main(argv: list[str]) -> None:
    root, max_bytes, generation = Path(argv[0]), int(argv[1]), int(argv[2])
    if "--crash-after-files" in argv:
        write_frame_files(root, item(f"g{generation}-crash"))
        print("files", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    store = RetentionStore(root, max_bytes=max_bytes)
    i = 0
    while True:
        frame_id = f"g{generation}-{i}"
        try:
            store.retain(item(frame_id))
        except RetentionDroppedError:
            pass
        else:
            if i % 5 == 0:
                store.label(frame_id, "defect", "scratch")
            if i % 5 == 0 and i % 20 != 0:  # most labelled frames exported: evictable again
                frame = store.get(frame_id)
                if frame is not None:
                    store.mark_exported([frame.seq])
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1:])
