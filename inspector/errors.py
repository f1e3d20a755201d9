"""The exception hierarchy: one root, subclasses that say what went wrong and what to do.

Every error raised on purpose by inspector derives from :class:`InspectorError`, so the CLI and
the daemon can tell an expected, explained failure (exit 1 or 2 with a message) from a bug.
"""

from __future__ import annotations


class InspectorError(Exception):
    """Root of every error inspector raises on purpose."""

    #: Process exit code the CLI uses for this kind of error (2 = bad usage or config).
    exit_code: int = 1


class ConfigError(InspectorError):
    """A configuration key or command-line value is wrong; the message names it and why."""

    exit_code = 2


class InputSizeError(ConfigError):
    """An image size the model cannot take (height and width must be multiples of 32)."""


class WeightsUnavailableError(InspectorError):
    """Pretrained encoder weights cannot be found; the message says which file to put where."""


class CheckpointError(InspectorError):
    """A checkpoint file is missing, truncated, tampered with or does not fit the model."""


class DatasetError(InspectorError):
    """A dataset folder is missing, empty or not in a layout inspector understands."""


class ImageDecodeError(InspectorError):
    """Bytes or a file that cannot be decoded into an image."""


class CalibrationError(InspectorError):
    """Calibration cannot be fitted from the data given (for example no validation images)."""


class BrokerUnavailableError(InspectorError):
    """No Kafka broker answered at ``kafka.bootstrap_servers``; the daemon waits and retries."""
