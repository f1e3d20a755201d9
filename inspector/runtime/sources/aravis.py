"""Aravis, the GenICam library for GigE Vision and USB3 Vision cameras, through PyGObject.

Imported only by what needs cameras (``inspector cameras``, the ``genicam`` source), so a
daemon without machine-vision cameras never loads GObject. The bindings are Debian's
``python3-gi`` with ``gir1.2-aravis-0.8`` (``.ci/ensure-aravis`` installs them and lets the
virtual environment import them; it explains why not PyPI's PyGObject).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from inspector.errors import CameraLibraryMissingError

#: The Aravis API version the bindings are asked for.
ARAVIS_API = "0.8"
_INSTALL = (
    "install Aravis and its Python bindings: bash .ci/ensure-aravis .venv "
    "(Debian: apt-get install gir1.2-aravis-0.8 python3-gi)"
)
_lock = threading.Lock()  # Aravis' device list is global state of the library


def aravis() -> ModuleType:
    """The ``Aravis`` introspection module.

    Raises:
        CameraLibraryMissingError: PyGObject or Aravis' introspection data is missing (the
            message says what to install).
    """
    try:
        # No type information for PyGObject; a venv without the link has no gi at all.
        import gi  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        raise CameraLibraryMissingError(f"GenICam cameras need PyGObject (gi): {_INSTALL}") from exc
    try:
        gi.require_version("Aravis", ARAVIS_API)
        from gi.repository import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            Aravis,
        )
    except (ValueError, ImportError) as exc:
        raise CameraLibraryMissingError(
            f"GenICam cameras need Aravis {ARAVIS_API} ({exc}): {_INSTALL}"
        ) from exc
    module: ModuleType = Aravis
    return module


@dataclass(frozen=True)
class DeviceInfo:
    """One GenICam device found on the networks and buses.

    Attributes:
        id: Aravis' device id (``<vendor>-<model>-<serial>`` or similar): what a ``genicam``
            source's ``device`` names.
        vendor: Manufacturer.
        model: Camera model.
        serial: Serial number.
        address: IP address (GigE Vision) or bus address (USB3 Vision).
        protocol: ``GigEVision`` or ``USB3Vision``.
    """

    id: str
    vendor: str
    model: str
    serial: str
    address: str
    protocol: str

    def as_dict(self) -> dict[str, Any]:
        """Plain fields, for JSON."""
        return asdict(self)


def list_devices() -> list[DeviceInfo]:
    """Every GenICam device Aravis finds now.

    GigE Vision discovery broadcasts on each interface and waits for answers (about a second).

    Raises:
        CameraLibraryMissingError: Aravis is not installed.
    """
    lib = aravis()
    with _lock:
        lib.update_device_list()
        return [
            DeviceInfo(
                id=lib.get_device_id(i) or "",
                vendor=lib.get_device_vendor(i) or "",
                model=lib.get_device_model(i) or "",
                serial=lib.get_device_serial_nbr(i) or "",
                address=lib.get_device_address(i) or "",
                protocol=lib.get_device_protocol(i) or "",
            )
            for i in range(lib.get_n_devices())
        ]
