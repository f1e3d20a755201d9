"""Score drift: how far recent raw image scores have moved from the ones calibration saw.

The statistic is the **population stability index** (PSI) over the quintiles of the held-out
good images' raw scores at calibration time. Those quintiles cut the score axis into five bins
that each held a fifth of the calibration's good images; the recent scores fall into the same
bins in some other proportion, and

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

with ``expected = 1/5``. It is 0 for the same distribution and grows with any shift, up or
down, or a change of spread (a brighter lamp, a dirty lens, a new lot of material), before
that shift is large enough to push good parts over the threshold. The usual reading: below 0.1
stable, 0.1 to 0.25 a moderate shift worth a look, above 0.25 a significant shift (the
alert's level).

The reference's own sampling error adds to the figure of an unchanged line: with the minimum
of :data:`MIN_GOOD` calibration images it mostly stays near 0.1 (rarely up to about 0.25),
with 200 it stays under 0.05. Five bins rather than ten keep that floor low for the calibration
sets lines actually have. Pure Python on floats: a few hundred scores per camera.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

#: Bins of the reference: the quintiles of the calibration's good scores.
BINS = 5
#: Fewest held-out good scores a reference is made from (fewer: no drift figure).
MIN_GOOD = 50
#: Smallest share a bin is given, so that an empty bin costs a finite amount.
_FLOOR = 1e-4


def reference_edges(good_scores: Sequence[float], bins: int = BINS) -> tuple[float, ...]:
    """The ``bins - 1`` inner quantile edges of good images' raw scores (ascending).

    Args:
        good_scores: Raw image scores of held-out good images (at least :data:`MIN_GOOD`).
        bins: Equal-share bins wanted (:data:`BINS`, the quintiles).

    Raises:
        ValueError: Fewer than :data:`MIN_GOOD` scores, or a score that is not finite.
    """
    values = sorted(float(s) for s in good_scores)
    if len(values) < max(MIN_GOOD, bins):
        raise ValueError(
            f"score drift needs at least {max(MIN_GOOD, bins)} good scores, got {len(values)}"
        )
    if not all(math.isfinite(v) for v in values):
        raise ValueError("score drift: a good score is not finite")
    edges = []
    for k in range(1, bins):
        # Linear interpolation between order statistics (numpy's default quantile).
        position = k / bins * (len(values) - 1)
        low = math.floor(position)
        high = min(low + 1, len(values) - 1)
        edges.append(values[low] + (values[high] - values[low]) * (position - low))
    return tuple(edges)


def population_stability(edges: Sequence[float], scores: Sequence[float]) -> float:
    """PSI of ``scores`` against the equal-share bins ``edges`` cut (see the module).

    Args:
        edges: :func:`reference_edges` of the calibration.
        scores: Recent raw image scores (non-finite ones are ignored).

    Returns:
        The index, ``>= 0``; ``0.0`` when there is no finite score to compare.
    """
    bins = len(edges) + 1
    counts = [0] * bins
    n = 0
    for score in scores:
        if math.isfinite(score):
            # A score equal to an edge goes above it, as numpy.digitize does.
            counts[bisect.bisect_right(edges, score)] += 1
            n += 1
    if n == 0:
        return 0.0
    expected = 1.0 / bins
    total = 0.0
    for count in counts:
        actual = max(count / n, _FLOOR)
        total += (actual - expected) * math.log(actual / expected)
    return total
