"""Unit tests of the private CA: certificates chain to it and carry the loopback SANs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from nimbus.homeserver.ca import CertificateAuthority
from nimbus.homeserver.errors import ConfigError


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_issued_certificate_chains_to_the_ca_with_loopback_sans(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    issued = ca.issue(tmp_path / "server")
    leaf, chained_ca = load_chain(issued.certificate)
    assert chained_ca == ca.certificate
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    now = dt.datetime.now(dt.UTC)
    verifier = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .time(now)
        .build_server_verifier(x509.DNSName("localhost"))
    )
    verifier.verify(leaf, [])  # raises if it does not chain or the name does not match
    ip_verifier = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .time(now)
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    ip_verifier.verify(leaf, [])
    assert stat.S_IMODE(issued.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600


def test_certificate_of_another_ca_does_not_verify(tmp_path: Path) -> None:
    ca1 = CertificateAuthority.load_or_create(tmp_path / "ca1")
    ca2 = CertificateAuthority.load_or_create(tmp_path / "ca2")
    leaf = load_chain(ca2.issue(tmp_path / "s").certificate)[0]
    verifier = (
        PolicyBuilder().store(Store([ca1.certificate])).build_server_verifier(x509.DNSName("localhost"))
    )
    with pytest.raises(VerificationError):
        verifier.verify(leaf, [])


def test_ca_is_reloaded_not_regenerated(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    again = CertificateAuthority.load_or_create(tmp_path / "ca")
    assert again.certificate == ca.certificate
    basic = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is True
    leaf = load_chain(again.issue(tmp_path / "s").certificate)[0]
    assert leaf.issuer == ca.certificate.subject


def test_unreadable_ca_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    (tmp_path / "ca.key").write_text("not a key")
    with pytest.raises(ConfigError, match="cannot load the CA"):
        CertificateAuthority.load(tmp_path)
