"""Interoperability with other tools' checkpoints (anomalib)."""

from inspector.ml.interop.anomalib import (
    anomalib_calibration,
    convert_anomalib_state_dict,
    import_anomalib,
)

__all__ = ["anomalib_calibration", "convert_anomalib_state_dict", "import_anomalib"]
