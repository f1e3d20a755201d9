"""Training, calibration and evaluation of Reverse Distillation models."""
