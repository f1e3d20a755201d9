"""inspector: streaming Reverse Distillation anomaly detection."""

__version__ = "0.1.0"
