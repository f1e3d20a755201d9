"""Synthetic industrial-surface datasets: ``inspector synth``."""

from inspector.tools.synth.dataset import SynthSummary, generate_dataset
from inspector.tools.synth.highres import generate_highres_line
from inspector.tools.synth.surfaces import CATEGORIES, DEFECT_KINDS, add_defect, render_good

__all__ = [
    "CATEGORIES",
    "DEFECT_KINDS",
    "SynthSummary",
    "add_defect",
    "generate_dataset",
    "generate_highres_line",
    "render_good",
]
