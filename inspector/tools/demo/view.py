"""The demo's live terminal view: what a line operator would watch.

:class:`LineTally` counts what arrives on the results and dead-letter topics (pure, testable);
:func:`render` draws it with ``rich`` for a terminal, :meth:`LineTally.summary` is the plain
one-line form for logs and pipes.

Two latencies, always named: ``daemon`` is the daemon's own time per frame (its
``latency_ms.total``: decode, queue, inference, post-processing), ``capture→verdict`` is what
the line sees, from the frame's ``captured_at`` to its verdict (``processed_at``), which adds
the transport and any wait in the topic (e.g. before the consumer owned its partitions).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from inspector.messages import ResultMessage

#: Results kept for the latency percentiles and the frames/s window.
_WINDOW = 500
_RATE_WINDOW_S = 5.0


@dataclass(frozen=True)
class Flagged:
    """One anomalous frame, as the view lists it."""

    camera_id: str
    frame_id: str
    score: float
    defects: int
    bbox: tuple[int, int, int, int] | None
    truth: str | None


@dataclass
class CameraTally:
    """Counts for one camera.

    Attributes:
        frames: Results.
        anomalous: Results flagged anomalous.
        defective: Results of frames that really showed a defect.
        caught: Defective frames flagged.
        false_alarms: Good frames flagged.
        inference_ms: Recent inference times (of the frame's model group in its batch).
    """

    frames: int = 0
    anomalous: int = 0
    defective: int = 0
    caught: int = 0
    false_alarms: int = 0
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def inference_p50(self) -> float | None:
        """Median of the recent inference times in ms (``None``: no result yet)."""
        if not self.inference_ms:
            return None
        return float(np.median(np.fromiter(self.inference_ms, float)))


@dataclass
class LineTally:
    """Running counts of results and dead letters.

    Args:
        truth: Looks up what the simulator really sent for a frame id (``good``, a defect kind,
            ``corrupt``), or ``None`` when unknown; used to count catches and false alarms.
        sent: Frames the cameras have sent so far (``None``: unknown); what is sent and not
            yet back is how far the line is behind.
        clock: Monotonic clock (tests pass a fake one).
        featured: Cameras shown on a line of their own, by id, with what sets them apart
            (e.g. ``{"line1-hires": "1024x768, 63 tiles/frame"}``); the totals still count
            every camera.
    """

    truth: Callable[[str], str | None] = lambda _frame_id: None
    sent: Callable[[], int] | None = None
    clock: Callable[[], float] = time.monotonic
    featured: Mapping[str, str] = field(default_factory=dict)
    results: int = 0
    late: int = 0
    with_deadline: int = 0
    anomalous: int = 0
    defects: int = 0
    dead_letters: int = 0
    caught: int = 0
    missed: int = 0
    false_alarms: int = 0
    last_dead_letter: str | None = None
    cameras: dict[str, CameraTally] = field(default_factory=dict)
    flagged: deque[Flagged] = field(default_factory=lambda: deque(maxlen=6))
    _latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    _capture_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    _arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def total(self) -> int:
        """Frames accounted for: results plus dead letters."""
        return self.results + self.dead_letters

    def add_result(self, message: ResultMessage) -> None:
        """Count one result message."""
        self.results += 1
        self._arrivals.append(self.clock())
        self._latency_ms.append(message.latency_ms.total)
        if (capture_ms := message.capture_to_verdict_ms()) is not None:
            self._capture_ms.append(capture_ms)
        camera = self.cameras.setdefault(message.camera_id, CameraTally())
        camera.frames += 1
        camera.inference_ms.append(message.latency_ms.inference)
        if message.late is not None:
            self.with_deadline += 1
            self.late += message.late
        truth = self.truth(message.frame_id)
        defective = truth is not None and truth != "good"
        camera.defective += int(defective)
        if message.is_anomalous:
            self.anomalous += 1
            camera.anomalous += 1
            self.defects += len(message.defects)
            biggest = max(message.defects, key=lambda d: d.area_px, default=None)
            self.flagged.appendleft(
                Flagged(
                    camera_id=message.camera_id,
                    frame_id=message.frame_id,
                    score=message.score,
                    defects=len(message.defects),
                    bbox=biggest.bbox if biggest else None,
                    truth=truth,
                )
            )
            if defective:
                self.caught += 1
                camera.caught += 1
            elif truth == "good":
                self.false_alarms += 1
                camera.false_alarms += 1
        elif defective:
            self.missed += 1

    def add_dead_letter(self, error: str) -> None:
        """Count one dead letter with its ``error`` header."""
        self.dead_letters += 1
        self.last_dead_letter = error

    def behind(self) -> int | None:
        """Frames sent by the cameras and not yet back as a result or dead letter."""
        return None if self.sent is None else max(0, self.sent() - self.total)

    def late_share(self) -> float | None:
        """Share of results with a deadline that came after it (``None``: none had one)."""
        return self.late / self.with_deadline if self.with_deadline else None

    def frames_per_s(self) -> float:
        """Results per second over the last few seconds."""
        now = self.clock()
        recent = sum(1 for t in self._arrivals if now - t <= _RATE_WINDOW_S)
        # Over the whole window (or since the start), not first-to-last arrival: results come
        # in batches, and a burst of eight at once is not a rate.
        span = min(_RATE_WINDOW_S, now - self.started)
        return recent / span if span > 0 else 0.0

    def latency_ms(self, q: float) -> float | None:
        """Percentile ``q`` (0..100) of the daemon's own recent latencies in ms (``daemon``)."""
        return _percentile(self._latency_ms, q)

    def capture_to_verdict_ms(self, q: float) -> float | None:
        """Percentile ``q`` (0..100) of recent capture-to-verdict times in ms.

        ``None`` until a result with a capture time came.
        """
        return _percentile(self._capture_ms, q)

    def latencies(self) -> str:
        """Both latencies, named: ``daemon p50/p95 12/30 ms, capture→verdict p50/p95 ...``."""
        daemon = _pair(self.latency_ms(50), self.latency_ms(95))
        line = _pair(self.capture_to_verdict_ms(50), self.capture_to_verdict_ms(95))
        return f"daemon p50/p95 {daemon}, capture→verdict p50/p95 {line}"

    def summary(self) -> str:
        """One line for logs and pipes."""
        counts = (
            f"{self.results} results ({self.frames_per_s():.1f}/s), {self.anomalous} anomalous "
            f"({self.caught} defective parts caught, {self.missed} missed, "
            f"{self.false_alarms} false alarms), {self.defects} defect regions, "
            f"{self.dead_letters} dead letters"
        )
        latency = self.latencies() if self.results else ""
        parts = (counts, latency, self._falling_behind(), *self.featured_lines())
        return "; ".join(part for part in parts if part)

    def featured_lines(self) -> list[str]:
        """One line per featured camera: its catches and false alarms, and its model's time.

        E.g. ``line1-hires (1024x768, 63 tiles/frame): 4 frames, caught 1 of 2 defective,
        0 false alarms, inference p50 2400 ms``.
        """
        lines = []
        for camera_id, about in self.featured.items():
            cam = self.cameras.get(camera_id, CameraTally())
            line = (
                f"{camera_id} ({about}): {cam.frames} frames, caught {cam.caught} of "
                f"{cam.defective} defective, {cam.false_alarms} false alarms"
            )
            if (p50 := cam.inference_p50()) is not None:
                line += f", inference p50 {p50:.0f} ms"
            lines.append(line)
        return lines

    def _falling_behind(self) -> str:
        parts = []
        if (behind := self.behind()) is not None:
            parts.append(f"{behind} frames behind")
        if (share := self.late_share()) is not None:
            parts.append(f"{self.late} late ({share:.0%})")
        return ", ".join(parts)


def _percentile(values: deque[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.fromiter(values, float), q))


def _pair(p50: float | None, p95: float | None) -> str:
    """``12/30 ms``, or ``-`` before there is anything to measure."""
    return "-" if p50 is None or p95 is None else f"{p50:.0f}/{p95:.0f} ms"


def render(tally: LineTally, header: str, height: int = 24) -> RenderableType:
    """The live view: totals, per-camera table, last flagged frames, in ``height`` lines.

    Lines never wrap (long ids and reasons end in an ellipsis) and the tables shrink to the
    terminal's height, so the view fits an 80 x 24 terminal.
    """
    behind, share = tally.behind(), tally.late_share()
    # Red when the line falls behind: frames waiting, or verdicts after the deadline.
    lagging = (behind or 0) > 2 * max(1.0, tally.frames_per_s()) or (share or 0) > 0.01
    style = "bold red" if lagging else "bold"
    totals = Table.grid(padding=(0, 2))
    for _ in range(4):
        totals.add_column(no_wrap=True, overflow="ellipsis")
    totals.add_row(
        f"[bold]{tally.results}[/] results",
        f"[bold]{tally.frames_per_s():.1f}[/] frames/s",
        f"[bold red]{tally.anomalous}[/] anomalous",
        f"[bold]{tally.defects}[/] regions",
    )
    late = f"late [{style}]{tally.late}[/]"
    totals.add_row(
        f"caught [bold green]{tally.caught}[/] missed [bold]{tally.missed}[/]",
        f"false alarms [bold]{tally.false_alarms}[/]",
        f"behind [{style}]{'-' if behind is None else behind}[/] frames",
        late if share is None else f"{late} ([{style}]{share:.0%}[/])",
    )
    # Both latencies on a line of their own: named, they do not fit the grid's columns.
    latency = Text.from_markup(
        f"daemon p50/p95 [bold]{_pair(tally.latency_ms(50), tally.latency_ms(95))}[/]   "
        "capture→verdict p50/p95 "
        f"[{style}]{_pair(tally.capture_to_verdict_ms(50), tally.capture_to_verdict_ms(95))}[/]"
    )
    latency.no_wrap, latency.overflow = True, "ellipsis"
    dead = Text.from_markup(f"[bold]{tally.dead_letters}[/] dead letters")
    if tally.last_dead_letter:
        dead.append(f" (last: {' '.join(tally.last_dead_letter.split())})")
    dead.no_wrap, dead.overflow = True, "ellipsis"
    featured = [Text(line, no_wrap=True, overflow="ellipsis") for line in tally.featured_lines()]

    # Panel borders 2, totals 4 (with the latencies and the dead letters), the featured
    # cameras' lines, each table's title, header and rule 3: the rest is rows.
    rows = max(2, height - 2 - 4 - len(featured) - 3 - 3)
    camera_rows = min(len(tally.cameras), max(1, rows // 3))
    cameras = _table("cameras", ("camera", "frames", "anomalous", "rate"))
    for name, cam in sorted(tally.cameras.items())[:camera_rows]:
        rate = cam.anomalous / cam.frames if cam.frames else 0.0
        cameras.add_row(name, str(cam.frames), str(cam.anomalous), f"{rate:.0%}")

    flagged = _table("last anomalous frames", ("camera", "frame", "score", "n", "bbox", "truth"))
    for f in list(tally.flagged)[: max(1, rows - camera_rows)]:
        bbox = ",".join(map(str, f.bbox)) if f.bbox else "-"
        flagged.add_row(
            f.camera_id, f.frame_id, f"{f.score:.2f}", str(f.defects), bbox, f.truth or "?"
        )
    status = "[bold red]FALLING BEHIND[/]" if lagging else "keeping up"
    return Panel(
        Group(totals, latency, dead, *featured, cameras, flagged),
        title=header,
        subtitle=f"{status} · Ctrl+C stops",
    )


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=True)
    for i, column in enumerate(columns):
        # Ids first, capped, so that the numbers after them always keep their columns.
        if i < 2:
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=20)
        else:
            table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=len(column))
    return table
