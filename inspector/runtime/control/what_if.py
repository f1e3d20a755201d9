"""Threshold what-if: what a camera's retained frames say another image threshold would do.

``GET /v1/cameras/{id}/what-if?image_threshold=X&limit=N`` reads the camera's ``N`` newest
retained frames (normalised scores, the threshold each was judged at, its verdict and the
operator's label) and answers, for the current threshold (the one its newest frame was judged
at) and for ``X``, side by side:

* exact counts over the retained frames: how many a threshold flags, of those how many were
  labelled false alarms and how many defects (``defect`` or ``missed_defect``: catches), how
  many labelled defects it lets through (misses), and how many it flags without a label;
* the false-alarm rate among frames labelled false alarms (what share of the parts an operator
  called good it still flags) and the catch rate among labelled defects;
* an estimated flag rate of the whole line. Retention keeps every flagged frame but only a
  sampled share of the good ones (``retention.good_sample_rate``), so each frame retained as
  good stands for ``1 / good_sample_rate`` frames (a Horvitz-Thompson estimate). Frames dropped
  under disk pressure or evicted make it approximate; the counts stay exact for what is kept.

Scores and thresholds are on the normalised scale a recipe's ``image_threshold`` uses; a frame
is flagged when its score is above the threshold, as the daemon decides. Nothing is changed:
apply a threshold with ``PUT /v1/cameras/{id}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from inspector.runtime.retention.reader import ScoredRow

#: Newest frames a what-if reads by default, and at most.
DEFAULT_FRAMES = 1000
MAX_FRAMES = 20_000
DEFECT_LABELS = frozenset({"defect", "missed_defect"})


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ThresholdOutcome(_Answer):
    """What one image threshold does over the retained frames."""

    image_threshold: float = Field(description="normalised (0..1)")
    flagged: int = Field(description="retained frames scored above the threshold")
    false_alarms: int = Field(description="flagged frames an operator labelled false_alarm")
    catches: int = Field(description="flagged frames labelled defect or missed_defect")
    misses: int = Field(description="frames labelled defect or missed_defect not flagged")
    unlabelled_flagged: int = Field(description="flagged frames without a label")
    false_alarm_rate: float | None = Field(
        description="false_alarms over frames labelled false_alarm (null: none labelled)"
    )
    catch_rate: float | None = Field(
        description="catches over frames labelled defect or missed_defect (null: none labelled)"
    )
    estimated_flag_rate: float | None = Field(
        description="share of the line's frames flagged, each retained good frame standing for "
        "1 / good_sample_rate frames (null: good frames are not sampled, or none retained)"
    )


class WhatIf(_Answer):
    """The answer of ``GET /v1/cameras/{id}/what-if``."""

    camera_id: str
    frames: int = Field(description="retained frames read (the newest, at most limit)")
    labelled_false_alarms: int
    labelled_defects: int
    good_sample_rate: float
    current: ThresholdOutcome = Field(
        description="at the threshold the camera's newest frame was judged at"
    )
    proposed: ThresholdOutcome = Field(description="at the image_threshold asked about")


def outcome(
    rows: Sequence[ScoredRow], image_threshold: float, good_sample_rate: float
) -> ThresholdOutcome:
    """Counts and rates of one threshold over ``rows`` (see the module)."""
    flagged = false_alarms = catches = misses = unlabelled = 0
    weight_all = weight_flagged = 0.0
    sampled = good_sample_rate > 0
    labelled_good = labelled_bad = 0
    for row in rows:
        above = row.score > image_threshold
        weight = 1.0 if row.is_anomalous else (1.0 / good_sample_rate if sampled else 0.0)
        weight_all += weight
        if row.label == "false_alarm":
            labelled_good += 1
        elif row.label in DEFECT_LABELS:
            labelled_bad += 1
        if above:
            flagged += 1
            weight_flagged += weight
            if row.label is None:
                unlabelled += 1
            elif row.label == "false_alarm":
                false_alarms += 1
            elif row.label in DEFECT_LABELS:
                catches += 1
        elif row.label in DEFECT_LABELS:
            misses += 1
    return ThresholdOutcome(
        image_threshold=image_threshold,
        flagged=flagged,
        false_alarms=false_alarms,
        catches=catches,
        misses=misses,
        unlabelled_flagged=unlabelled,
        false_alarm_rate=false_alarms / labelled_good if labelled_good else None,
        catch_rate=catches / labelled_bad if labelled_bad else None,
        estimated_flag_rate=weight_flagged / weight_all if sampled and weight_all else None,
    )


def what_if(
    camera_id: str, rows: Sequence[ScoredRow], image_threshold: float, good_sample_rate: float
) -> WhatIf:
    """Both thresholds over the newest-first ``rows`` of a camera (at least one row).

    Args:
        camera_id: The camera.
        rows: Its newest retained frames, newest first (:meth:`RetentionIndex.recent_scores`).
        image_threshold: The normalised threshold asked about.
        good_sample_rate: The share of good frames retention keeps (0: no estimate).
    """
    current = rows[0].threshold
    return WhatIf(
        camera_id=camera_id,
        frames=len(rows),
        labelled_false_alarms=sum(r.label == "false_alarm" for r in rows),
        labelled_defects=sum(r.label in DEFECT_LABELS for r in rows),
        good_sample_rate=good_sample_rate,
        current=outcome(rows, current, good_sample_rate),
        proposed=outcome(rows, image_threshold, good_sample_rate),
    )
