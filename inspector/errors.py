"""The exception hierarchy: one root, subclasses that say what went wrong and what to do.

Every error raised on purpose by inspector derives from :class:`InspectorError`, so the CLI and
the daemon can tell an expected, explained failure (exit 1 or 2 with a message) from a bug.
"""

from __future__ import annotations

from inspector.dead_letters import ErrorType


class InspectorError(Exception):
    """Root of every error inspector raises on purpose."""

    #: Process exit code the CLI uses for this kind of error (2 = bad usage or config).
    exit_code: int = 1


class ConfigError(InspectorError):
    """A configuration key or command-line value is wrong; the message names it and why."""

    exit_code = 2


class InputSizeError(InspectorError):
    """Input of a shape the model cannot take (not ``(N, 3, H, W)`` at its size).

    A runtime failure (exit 1), not a configuration error: the configured sizes are checked
    when the configuration is read (multiples of 32).
    """


class RegionError(InspectorError):
    """A frame's region of interest or tiling does not fit the frame or the model.

    The ROI lies outside the frame, the region is smaller than one tile, or the tiles are not
    the model's input size. A failure of one frame (exit 1), not of the daemon: the frame
    becomes a dead letter whose ``error_type`` is :attr:`kind` and whose reason is the message.

    Attributes:
        kind: :attr:`~ErrorType.ROI_OUTSIDE_FRAME` or :attr:`~ErrorType.TILING_MISMATCH`.
    """

    def __init__(self, message: str, kind: ErrorType = ErrorType.TILING_MISMATCH) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type[RegionError], tuple[str, ErrorType]]:
        # As ImageTooLargeError: pickled as type(*args), and args holds the message only.
        return type(self), (str(self), self.kind)


class WeightsUnavailableError(InspectorError):
    """Pretrained encoder weights cannot be found; the message says which file to put where."""


class CheckpointError(InspectorError):
    """A checkpoint file is missing, truncated, tampered with or does not fit the model."""


class CheckpointFileError(CheckpointError):
    """A checkpoint path that names no readable checkpoint file, refused before reading it.

    Not a regular file (a directory, FIFO or device such as ``/dev/zero``), or a safetensors
    header that declares more bytes (header or tensors) than the file holds. A set-up problem
    (exit 2), like a wrong path in the configuration; the message names the file and what is
    wrong with it.
    """

    exit_code = 2


class ModelParityError(CheckpointError):
    """A model whose scores on its stored probe set are not the ones recorded with it.

    The served model (its backend, precision and device) computed a probe image's score or map
    further from the fp32 values stored at training or calibration than the tolerance for
    that backend and precision: an export, a quantization or a runtime changed the maps. The
    message names the probe, both values, the difference and the tolerance, and what to do.
    The control API answers 422; a SIGHUP reload keeps the old model.
    """


class DatasetError(InspectorError):
    """A dataset folder is missing, empty or not in a layout inspector understands."""


class ImageDecodeError(InspectorError):
    """Bytes or a file that cannot be decoded into an image."""


class ImageTooLargeError(ImageDecodeError):
    """An image with more pixels than ``sources[*].max_pixels``, refused before decoding.

    The size comes from the encoded header, so a decompression bomb (a 32 KB PNG declaring
    12000 x 12000 px) costs no memory. The message reads ``height x width``, like the shapes.

    Attributes:
        height: Height in pixels.
        width: Width in pixels.
        max_pixels: The limit ``height * width`` exceeds.
        where: What the image is (a file path), prefixed to the message; ``""``: nothing.
    """

    def __init__(self, height: int, width: int, max_pixels: int, where: str = "") -> None:
        pixels = height * width

        def amount(n: int) -> str:
            return f"{n / 1e6:.1f} MP" if n >= 100_000 else f"{n} px"

        size, limit = amount(pixels), amount(max_pixels)
        if size == limit:  # 50_000_001 vs 50_000_000 px: rounding would hide the difference
            size, limit = f"{pixels} px", f"{max_pixels} px"
        prefix = f"{where}: " if where else ""
        super().__init__(
            f"{prefix}{height} x {width} px ({size}) exceeds the pixel limit of {limit} "
            "(sources[*].max_pixels)"
        )
        self.height = height
        self.width = width
        self.max_pixels = max_pixels
        self.where = where

    def __reduce__(self) -> tuple[type[ImageTooLargeError], tuple[int, int, int, str]]:
        # Exceptions pickle as type(*args) and args is the message only: rebuild from fields,
        # so the error survives a trip through a process pool or a DataLoader worker.
        return type(self), (self.height, self.width, self.max_pixels, self.where)


class CalibrationError(InspectorError):
    """Calibration cannot be fitted from the data given (for example no validation images)."""


class BrokerUnavailableError(InspectorError):
    """No Kafka broker answered at ``kafka.bootstrap_servers``; the daemon waits and retries."""


class RecordRefusedError(InspectorError):
    """A sink refuses one record for good (too large, invalid): retrying cannot help.

    Any other delivery failure may pass (a broker restarting) and is retried; this one ends
    the attempt, so the frame becomes a dead letter instead.
    """


class WaitAbandonedError(InspectorError):
    """Told to stop while waiting for work on another thread; that work was abandoned."""


class CameraLibraryMissingError(InspectorError):
    """The camera library (Aravis or its Python bindings) is not installed.

    A set-up problem, like a missing extra: exit code 2.
    """

    exit_code = 2


class ExportError(CheckpointError):
    """An exported model that cannot serve, or an export that cannot be written.

    Not an export, tampered with, or not matching its own metadata. A set-up problem: exit 2.
    """

    exit_code = 2


class BackendUnavailableError(ConfigError):
    """A model backend (or quantization) whose optional package is not installed.

    The message names the ``pip install`` to run. Exit code 2.
    """


class NotTriggerableError(ConfigError):
    """A software trigger sent to a source that takes none.

    Not a camera, or a camera whose ``trigger.mode`` is not ``software``; the message names
    the source and the setting. The control API answers 409: the request does not fit the
    source as it is configured.
    """


class StateFileError(ConfigError):
    """The state file (``daemon.state_path``) or one of its entries cannot be restored.

    The message names the file and the entry (``sources.1``...) and says how to fix it or
    that deleting the file starts from the YAML file. Exit code 2.
    """
