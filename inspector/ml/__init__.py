"""The ML workflow: training, calibration, evaluation, anomalib import, offline prediction."""
