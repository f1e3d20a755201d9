"""Building the MQTT sink's client: the ``plant`` extra, TLS, and a first look at the broker.

paho-mqtt is imported here, lazily (:func:`import_paho`): the plain install never imports it,
and a daemon configured for MQTT without the extra says which ``pip install`` it needs.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from inspector.errors import ConfigError
from inspector.runtime.config import MqttSinkConfig, MqttTlsConfig

INSTALL = "pip install 'inspector[plant]'"


def import_paho() -> Any:
    """paho-mqtt's client module, or a :class:`~inspector.errors.ConfigError` naming the extra."""
    try:
        import paho.mqtt.client as client
    except ImportError as exc:
        raise ConfigError(
            f"sinks.mqtt needs paho-mqtt (the 'plant' extra is not installed): {INSTALL}"
        ) from exc
    return client


def tls_context(tls: MqttTlsConfig) -> ssl.SSLContext:
    """A client TLS context that verifies the broker (``ca_file``, else the system's CAs).

    Raises:
        ConfigError: A file cannot be read or is not PEM of the right kind.
    """
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"sinks.mqtt.tls: cannot load the CA, certificate or key file: {exc}"
        ) from exc
    return context


def probe(config: MqttSinkConfig, context: ssl.SSLContext | None, where: str) -> str | None:
    """One TCP (and TLS) handshake with the broker now: ``None`` if it answered, else why.

    paho reports no reason for a failed connection attempt (and leaves the socket of a failed
    TLS handshake to the garbage collector), so a certificate problem is found here, at start,
    and said as the configuration error it is.

    Raises:
        ConfigError: The broker's certificate is not trusted.
    """
    host, port = config.host or "", config.effective_port
    try:
        with socket.create_connection((host, port), timeout=5.0) as raw:
            if context is not None:
                with context.wrap_socket(raw, server_hostname=host):
                    pass
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(
            f"{where}: the broker's certificate is not trusted ({exc.verify_message}); check "
            "sinks.mqtt.tls.ca_file and that sinks.mqtt.host is a name the certificate holds"
        ) from exc
    except OSError as exc:
        return str(exc)
    return None
