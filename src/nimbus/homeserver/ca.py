"""A private certificate authority for local federations.

Owns: creating/loading a CA (ECDSA P-256, `ca.pem` + `ca.key` mode 0600) and issuing server
certificates signed by it, with SAN DNS:localhost and IP:127.0.0.1 by default (federation traffic
between `localhost:<port>` servers is always HTTPS, Server-Server API "TLS": spec
https://spec.matrix.org/v1.12/server-server-api/#tls). Peers trust the CA via Synapse's
`federation_custom_ca_list`.

Rules: private keys are written 0600 and never logged; nothing here touches the network.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nimbus.homeserver.errors import ConfigError

_ONE_DAY = dt.timedelta(days=1)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: Path
    private_key: Path


class CertificateAuthority:
    """A CA kept in a folder: `ca.pem` (certificate) and `ca.key` (private key, 0600)."""

    def __init__(self, folder: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.folder = folder
        self.certificate = certificate
        self._key = key

    @property
    def certificate_path(self) -> Path:
        return self.folder / "ca.pem"

    @classmethod
    def load_or_create(cls, folder: Path, name: str = "nimbus local federation CA") -> CertificateAuthority:
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / "ca.pem", folder / "ca.key"
        if cert_path.exists() and key_path.exists():
            return cls.load(folder)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(folder, cert, key)

    @classmethod
    def load(cls, folder: Path) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
            key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load the CA in {folder}: {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"the CA key in {folder} is not an EC key")
        return cls(folder, cert, key)

    def issue(
        self,
        folder: Path,
        common_name: str = "localhost",
        dns_names: tuple[str, ...] = ("localhost",),
        ip_addresses: tuple[str, ...] = ("127.0.0.1",),
        days: int = 825,
    ) -> IssuedCertificate:
        """Issue a server certificate into `folder` (`server.pem` = leaf + CA chain, `server.key`)."""
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        san = [x509.DNSName(d) for d in dns_names] + [
            x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        issued = IssuedCertificate(folder / "server.pem", folder / "server.key")
        _write_key(issued.private_key, key)
        issued.certificate.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + self.certificate.public_bytes(serialization.Encoding.PEM)
        )
        return issued
