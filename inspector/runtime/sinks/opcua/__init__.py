"""The OPC UA server sink (``sinks.opcua``): each camera's last verdict, for PLCs.

:mod:`~inspector.runtime.sinks.opcua.sink` is the sink (a thread with its own event loop,
latest-value slots); :mod:`~inspector.runtime.sinks.opcua.server` the asyncua server (address
space, writes) and :mod:`~inspector.runtime.sinks.opcua.security` its certificates, trusted
clients and users, both imported only once the sink is set up, so the plain install (without
the ``plant`` extra) never imports asyncua; :mod:`~inspector.runtime.sinks.opcua.values` what a
camera object shows for one result.
"""

from __future__ import annotations

from inspector.runtime.sinks.opcua.sink import OpcuaSink

__all__ = ["OpcuaSink"]
