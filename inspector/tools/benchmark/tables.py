"""Rounding nested result tables for reading (the ``--compare`` results' ``paths``, ``runs``)."""

from __future__ import annotations

import math
from typing import Any


def tidy(value: Any) -> Any:
    """Round floats for reading and make NaN ``None``, in nested tables (as ``finish`` does)."""
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tidy(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.4g}") if abs(value) < 1 else round(value, 3)
    return value
