"""Throwaway TLS material: a certificate authority and the certificates it signs.

The sandbox makes a fresh set at every start, so it must be quick: EC P-256 keys take
milliseconds where RSA keys take a noticeable fraction of a second each.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
# Clocks of the machines that check a fresh certificate may be a little behind ours.
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    """A private key and its certificate."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: str | None = None) -> bytes:
        """The key as PKCS#8 PEM, encrypted if a password is given."""
        encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                      else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      encryption)

    def pkcs12(self, password: str, *chain: Issued) -> bytes:
        """A PKCS#12 key store with the key, its certificate and the ``chain`` above it.

        Brokers get this rather than PEM: Kafka's PEM key store wants an encrypted key,
        and the JVM cannot decrypt the PBES2 encryption that PEM keys get here.
        """
        return pkcs12.serialize_key_and_certificates(
            b"broker", self.key, self.certificate, [issuer.certificate for issuer in chain],
            serialization.BestAvailableEncryption(password.encode()))


def new_authority(name: str) -> Issued:
    """A self-signed CA certificate that may sign the others."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    not_before, not_after = _validity(None)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, certificate)


def issue(authority: Issued, name: str, hosts: tuple[str, ...] = (), *, server: bool,
          not_after: datetime.datetime | None = None) -> Issued:
    """A certificate signed by ``authority``: a server's for ``hosts`` (DNS names or IP
    addresses), or a client's. ``not_after`` in the past makes an expired one."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(not_after)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
                       critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]),
                                        critical=False)
    return Issued(key, builder.sign(authority.key, hashes.SHA256()))


def load(certificate_file: Path, key_file: Path) -> Issued:
    """An unencrypted key and its certificate, as :func:`write` left them."""
    certificate = x509.load_pem_x509_certificate(certificate_file.read_bytes())
    return Issued(serialization.load_pem_private_key(key_file.read_bytes(), password=None), certificate)


def write(path: Path, data: bytes, private: bool = False) -> Path:
    """Write a certificate, a key or a key store; ``private`` ones only their owner may read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600 if private else 0o644)
    return path


def _validity(not_after: datetime.datetime | None) -> tuple[datetime.datetime, datetime.datetime]:
    """(not before, not after): from a little before now for VALIDITY, or VALIDITY up to ``not_after``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    not_after = not_after or now + VALIDITY
    return min(now - CLOCK_SKEW, not_after - VALIDITY), not_after


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=not signs_certificates,
        key_cert_sign=signs_certificates, crl_sign=signs_certificates,
        encipher_only=False, decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
