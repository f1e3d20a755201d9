"""Applying a ``genicam`` source's settings to the camera, checked against its GenICam features.

Every setting is checked before it is written (the feature exists, the value is one the
camera offers or within its bounds), so a wrong one is a :class:`~inspector.errors.ConfigError`
naming the GenICam feature and what the camera accepts, not an opaque GLib error.
"""

from __future__ import annotations

from typing import Any

from inspector.errors import ConfigError
from inspector.runtime.config_genicam import GenicamSourceConfig

_EDGE = {"rising": "RisingEdge", "falling": "FallingEdge"}


def apply_settings(camera: Any, config: GenicamSourceConfig) -> None:
    """Write ``config``'s settings to an open Aravis camera.

    Raises:
        ConfigError: A feature is missing or rejects the value (named in the message).
    """
    where = f"sources[{config.camera_id}]"
    if config.pixel_format is not None:
        offered = list(camera.dup_available_pixel_formats_as_strings() or [])
        if config.pixel_format not in offered:
            raise ConfigError(
                f"{where}.pixel_format: the camera has no PixelFormat {config.pixel_format} "
                f"(it offers {', '.join(offered)})"
            )
        _write(
            where, "PixelFormat", lambda: camera.set_pixel_format_from_string(config.pixel_format)
        )
    if config.region is not None:
        x, y, width, height = config.region
        limits = {
            "Width": (width, camera.get_width_bounds()),
            "Height": (height, camera.get_height_bounds()),
            "OffsetX": (x, camera.get_x_offset_bounds()),
            "OffsetY": (y, camera.get_y_offset_bounds()),
        }
        for feature, (value, (low, high)) in limits.items():
            if not low <= value <= high:
                raise ConfigError(
                    f"{where}.region: {feature} {value} is outside the camera's {low}..{high}"
                )
        _write(
            where, "Width/Height/OffsetX/OffsetY", lambda: camera.set_region(x, y, width, height)
        )
    if config.exposure_us is not None:
        _bounded(
            where,
            "exposure_us",
            "ExposureTime",
            config.exposure_us,
            camera.is_exposure_time_available(),
            camera.get_exposure_time_bounds,
            camera.set_exposure_time,
        )
    if config.gain is not None:
        _bounded(
            where,
            "gain",
            "Gain",
            config.gain,
            camera.is_gain_available(),
            camera.get_gain_bounds,
            camera.set_gain,
        )
    if config.frame_rate is not None:
        _bounded(
            where,
            "frame_rate",
            "AcquisitionFrameRate",
            config.frame_rate,
            camera.is_frame_rate_available(),
            camera.get_frame_rate_bounds,
            camera.set_frame_rate,
        )
    _apply_trigger(camera, config, where)


def _apply_trigger(camera: Any, config: GenicamSourceConfig, where: str) -> None:
    trigger = config.trigger
    if trigger.mode == "free_run":
        _write(where, "TriggerMode", camera.clear_triggers)
        return
    sources = list(camera.dup_available_trigger_sources() or [])
    source = "Software" if trigger.mode == "software" else trigger.line
    if source not in sources:
        raise ConfigError(
            f"{where}.trigger: the camera has no TriggerSource {source} "
            f"(it offers {', '.join(sources) or 'none'})"
        )
    _write(where, f"TriggerSource {source}", lambda: camera.set_trigger(source))
    if trigger.mode == "line":
        device = camera.get_device()
        activation = _EDGE[trigger.edge]
        _write(
            where,
            f"TriggerActivation {activation}",
            lambda: device.set_string_feature_value("TriggerActivation", activation),
        )


def _bounded(
    where: str,
    key: str,
    feature: str,
    value: float,
    available: bool,
    bounds: Any,
    setter: Any,
) -> None:
    if not available:
        raise ConfigError(f"{where}.{key}: the camera has no {feature} feature")
    low, high = bounds()
    if not low <= value <= high:
        raise ConfigError(
            f"{where}.{key}: {feature} {value:g} is outside the camera's {low:g}..{high:g}"
        )
    _write(where, feature, lambda: setter(value))


def _write(where: str, feature: str, action: Any) -> None:
    try:
        action()
    except Exception as exc:  # GLib.Error from Aravis: the camera refused the write
        message = getattr(exc, "message", None) or str(exc)
        raise ConfigError(f"{where}: the camera refused {feature}: {message}") from exc
