"""A development certificate authority: one CA and a certificate per service, for local mTLS.

Each service certificate has the service name as CN and the SANs ``<service>``, ``localhost``
and ``127.0.0.1``, and is valid for both server and client authentication, so the same pair
serves a service's listener and its outgoing calls. Not for production: keys are unencrypted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from grpcmesh.errors import ConfigError

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ServiceCert:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class DevCerts:
    ca_file: Path
    ca_key_file: Path
    services: dict[str, ServiceCert]


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def generate_dev_certs(out_dir: str | Path, services: list[str], valid_days: int = 365) -> DevCerts:
    """Create ``ca.pem``/``ca-key.pem`` and ``<service>.pem``/``<service>-key.pem`` in ``out_dir``."""
    for index, name in enumerate(services):
        if not _SERVICE_NAME.match(name):
            raise ConfigError(
                f"services[{index}]: {name!r} is not a valid DNS-style service name (letters, digits, '-', '.')"
            )
    if valid_days < 1:
        raise ConfigError(f"valid_days: {valid_days} must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grpcmesh dev CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    result = DevCerts(out / "ca.pem", out / "ca-key.pem", {})
    _write_cert(result.ca_file, ca_cert)
    _write_key(result.ca_key_file, ca_key)

    for name in services:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(name)]
        if name != "localhost":
            sans.append(x509.DNSName("localhost"))
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pair = ServiceCert(out / f"{name}.pem", out / f"{name}-key.pem")
        _write_cert(pair.cert_file, cert)
        _write_key(pair.key_file, key)
        result.services[name] = pair
    return result
