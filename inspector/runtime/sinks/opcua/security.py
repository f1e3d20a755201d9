"""The OPC UA server's security: the daemon's certificate and key, trusted clients, users.

Every file is named by its ``sinks.opcua`` key when it cannot be used; a refused client is
logged with what identifies it (user name, certificate common name and fingerprint, escaped:
they are the client's text), never with a password.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from inspector.errors import ConfigError
from inspector.runtime.ids import for_log

log = logging.getLogger(__name__)

#: Certificate files read from ``trusted_clients_dir``.
_CERT_SUFFIXES = frozenset({".der", ".pem", ".crt", ".cer"})


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"sinks.opcua.{key}: cannot read {path}: {exc.strerror or exc}") from exc


def load_certificate(path: Path, key: str) -> x509.Certificate:
    """A certificate file (DER or PEM); :class:`ConfigError` naming ``key`` and the file."""
    data = _read(path, key)
    for parse in (x509.load_der_x509_certificate, x509.load_pem_x509_certificate):
        try:
            return parse(data)
        except ValueError:
            continue
    raise ConfigError(f"sinks.opcua.{key}: {path} is not an X.509 certificate (DER or PEM)")


def load_private_key(path: Path, password: str | None) -> Any:
    """The daemon's private key (PEM or DER); :class:`ConfigError` naming the key and file."""
    data = _read(path, "private_key_file")
    secret = password.encode() if password is not None else None
    problem = "not a private key (PEM or DER)"
    for parse in (serialization.load_pem_private_key, serialization.load_der_private_key):
        try:
            return parse(data, password=secret)
        except TypeError:  # encrypted without a password, or a password for a plain key
            problem = "encrypted, and sinks.opcua.private_key_password does not open it"
        except ValueError as exc:
            if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
                problem = "encrypted, and sinks.opcua.private_key_password does not open it"
    raise ConfigError(f"sinks.opcua.private_key_file: {path} is {problem}")


def application_uri(certificate: x509.Certificate, configured: str | None, path: Path) -> str:
    """The server's application URI: the certificate's, which ``configured`` must match.

    Raises:
        ConfigError: The certificate carries no URI, or not the configured one (OPC UA
            clients refuse such a server).
    """
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if configured is not None and configured in uris:
        return configured
    if configured is None and uris:
        return str(uris[0])
    wanted = f"the URI {configured}" if configured is not None else "a URI"
    raise ConfigError(
        f"sinks.opcua.certificate_file: {path} carries no subject alternative name with "
        f"{wanted} (it has {uris or 'none'}); OPC UA clients refuse a server whose certificate "
        "does not carry its application URI: issue the certificate with it, or set "
        "sinks.opcua.application_uri to the one it carries"
    )


def trusted_certificates(folder: Path, *, strict: bool) -> set[bytes]:
    """The DER bytes of every certificate in ``folder``.

    Args:
        folder: ``sinks.opcua.trusted_clients_dir``.
        strict: Raise on a file that is not a certificate (at start); otherwise skip it with a
            warning (a file copied in while running must not lock every client out).
    """
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _CERT_SUFFIXES)
    except OSError as exc:
        if strict:
            raise ConfigError(
                f"sinks.opcua.trusted_clients_dir: cannot list {folder}: {exc.strerror or exc}"
            ) from exc
        log.warning("cannot list sinks.opcua.trusted_clients_dir %s: %s", folder, exc)
        return set()
    trusted: set[bytes] = set()
    for path in files:
        try:
            certificate = load_certificate(path, "trusted_clients_dir")
        except ConfigError as exc:
            if strict:
                raise
            log.warning("%s; skipping it", exc)
            continue
        trusted.add(certificate.public_bytes(serialization.Encoding.DER))
    return trusted


def _subject(certificate: x509.Certificate) -> str:
    """The client's common name and fingerprint, safe for a log line (both are the client's)."""
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = for_log(str(names[0].value)) if names else "(no CN)"
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    return f"CN={name} SHA-256 {digest[:16]}"


class Users(UserManager):
    """User names and passwords from the config; anonymous clients only if allowed."""

    def __init__(self, users: dict[str, bytes], anonymous: bool) -> None:
        self._users = users
        self._anonymous = anonymous

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        """The user for a login, ``None`` (refused, logged without the password) otherwise."""
        del iserver, certificate
        if username is None:
            if self._anonymous:
                return User(role=UserRole.User)
            log.warning("OPC UA login refused: anonymous (sinks.opcua.allow_anonymous is false)")
            return None
        expected = self._users.get(username)
        given = (password or "").encode()
        # Compared in constant time, and against a dummy for unknown users, so neither the
        # password nor whether the user exists shows in the answer's timing.
        matches = hmac.compare_digest(given, expected if expected is not None else b"\0" * 32)
        if expected is None or not matches:
            log.warning(
                "OPC UA login refused for user %s: unknown user or wrong password "
                "(sinks.opcua.users)",
                for_log(username),
            )
            return None
        return User(role=UserRole.User, name=username)


def client_validator(
    folder: Path,
) -> Callable[[x509.Certificate, ua.ApplicationDescription], Awaitable[None]]:
    """Asyncua's certificate check for ``trusted_clients_dir``: the folder is read per session.

    A client certificate not in the folder (compared byte for byte: OPC UA clients' own
    certificates are self-signed), or out of its dates, is refused and logged with its common
    name and fingerprint (the client's text, escaped).
    """

    async def validate(certificate: x509.Certificate, app: ua.ApplicationDescription) -> None:
        der = certificate.public_bytes(serialization.Encoding.DER)
        who = f"{_subject(certificate)}, application {for_log(str(app.ApplicationUri))}"
        if der not in trusted_certificates(folder, strict=False):
            log.warning(
                "OPC UA client refused: its certificate (%s) is not in "
                "sinks.opcua.trusted_clients_dir (%s); copy it there to trust it",
                who,
                folder,
            )
            raise ServiceError(StatusCodes.BadCertificateUntrusted)
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            log.warning("OPC UA client refused: its certificate (%s) is out of its dates", who)
            raise ServiceError(StatusCodes.BadCertificateTimeInvalid)

    return validate


__all__ = [
    "Users",
    "application_uri",
    "client_validator",
    "load_certificate",
    "load_private_key",
    "trusted_certificates",
]
