"""OPC UA application certificates: the daemon's, a trusted client's and a stranger's.

Shared by the OPC UA tests and ``bench/plant_latency.py``. Made with asyncua's own helpers, as
an OPC UA application's are: self-signed, the application URI as a URI subject alternative
name, RSA 2048 (what ``Basic256Sha256`` takes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID


@dataclass(frozen=True)
class Identity:
    """An application's certificate (DER file) and key (PEM file), and its URI."""

    uri: str
    certificate: Path
    key: Path


def identity(folder: Path, name: str, uri: str, *, server: bool, days: int = 2) -> Identity:
    """A self-signed application certificate for ``uri``, written to ``folder``."""
    key = generate_private_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    certificate = generate_self_signed_app_certificate(
        key,
        name,
        {"organizationName": "inspector tests"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")],
        extended=[usage],
        days=days,
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(certificate.public_bytes(Encoding.DER))
    key_path.write_bytes(dump_private_key_as_pem(key))
    return Identity(uri, cert_path, key_path)


@dataclass(frozen=True)
class Pki:
    """The daemon's identity, the trusted clients' folder, a trusted and an untrusted client."""

    server: Identity
    trusted_dir: Path
    plc: Identity
    stranger: Identity


def make_pki(root: Path, server_uri: str, client_uri: str) -> Pki:
    """Write the daemon's, a trusted PLC's and an untrusted client's certificates under ``root``.

    Only the PLC's certificate is copied to the trusted clients' folder; the stranger has the
    same application URI, so what refuses it is the certificate alone.
    """
    server = identity(root / "own", "inspector", server_uri, server=True)
    plc = identity(root / "clients", "plc", client_uri, server=False)
    stranger = identity(root / "elsewhere", "stranger", client_uri, server=False)
    trusted = root / "trusted"
    trusted.mkdir()
    (trusted / "plc.der").write_bytes(plc.certificate.read_bytes())
    return Pki(server, trusted, plc, stranger)


__all__ = ["Identity", "Pki", "identity", "make_pki"]
