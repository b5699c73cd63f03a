"""Credentials of a Deployment Engine federation: a TLS CA and server certificate, node keys.

:func:`write_tls` creates a self-signed certificate authority and a SuperLink server
certificate signed by it (ECDSA P-256, SANs for the SuperLink's host, ``localhost`` and
``127.0.0.1``), so that SuperNodes, the ``flwr`` CLI and the ServerApp process verify the
SuperLink against ``ca.crt``. The CA's private key signs once and is never written: to
add a certificate later, prepare again.

:func:`write_node_keys` creates one ECDSA P-384 key pair per SuperNode in the OpenSSH
formats Flower 1.42 expects: the private key for ``flower-supernode
--auth-supernode-private-key`` and the public key for ``flwr supernode register``.

Every private key file is created 0600 through ``os.open`` (no umask can widen it) and
renamed into place; certificates and public keys are 0644.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from fedpers.privacy.errors import ConfigError

__all__ = [
    "CA_CERT",
    "SERVER_CERT",
    "SERVER_KEY",
    "NodeKey",
    "TlsFiles",
    "write_node_keys",
    "write_tls",
]

CA_CERT = "ca.crt"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
_VALID_DAYS = 30


@dataclass(frozen=True)
class TlsFiles:
    """Where the TLS material of a SuperLink lies.

    Attributes:
        ca_cert: the CA certificate (``--ssl-ca-certfile``, ``--root-certificates``).
        server_cert: the SuperLink's certificate (``--ssl-certfile``).
        server_key: its private key, 0600 (``--ssl-keyfile``).
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair.

    Attributes:
        private_key: OpenSSH private key, 0600 (``--auth-supernode-private-key``).
        public_key: OpenSSH public key (``flwr supernode register``).
    """

    private_key: Path
    public_key: Path


def _write(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to ``path`` with ``mode`` from creation on, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def _private_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def _san_entries(host: str) -> list[object]:
    from cryptography import x509

    loopback = ipaddress.ip_address("127.0.0.1")
    names: list[object] = [x509.DNSName("localhost"), x509.IPAddress(loopback)]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    else:
        if str(ip) != "127.0.0.1":
            names.append(x509.IPAddress(ip))
    return names


def write_tls(folder: Path | str, host: str = "127.0.0.1") -> TlsFiles:
    """Create a CA and a SuperLink server certificate for ``host`` in ``folder`` (0700).

    Args:
        folder: where ``ca.crt``, ``server.crt`` and ``server.key`` go.
        host: the address SuperNodes and the CLI use to reach the SuperLink.

    Returns:
        The three paths.

    Raises:
        ConfigError: when ``host`` is empty.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not host:
        raise ConfigError("the SuperLink host must not be empty")
    folder = _private_dir(Path(folder))
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=_VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedpers deployment CA")])
    signing_only = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(signing_only, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(_san_entries(host)), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TlsFiles(
        ca_cert=_write(folder / CA_CERT, ca_cert.public_bytes(pem), 0o644),
        server_cert=_write(folder / SERVER_CERT, server_cert.public_bytes(pem), 0o644),
        server_key=_write(folder / SERVER_KEY, key_pem, 0o600),
    )


def write_node_keys(folder: Path | str, count: int) -> list[NodeKey]:
    """Create ``count`` SuperNode key pairs ``supernode-<i>.key``/``.pub`` in ``folder``.

    Raises:
        ConfigError: when ``count`` is not positive.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if count < 1:
        raise ConfigError(f"a federation needs at least one SuperNode, got {count}")
    folder = _private_dir(Path(folder))
    keys = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        keys.append(
            NodeKey(
                private_key=_write(folder / f"supernode-{i}.key", private, 0o600),
                public_key=_write(folder / f"supernode-{i}.pub", public + b"\n", 0o644),
            )
        )
    return keys
