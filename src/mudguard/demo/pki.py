"""A throw-away test PKI for the demo: a CA made at start-up, a TLS certificate for the
fake manufacturer's HTTPS server, and a signing certificate for MUD signatures.

RFC 8520 §13: a MUD file's signature is a detached CMS SignedData (DER) over the
file's exact bytes. ``sign_detached()`` makes one with the ``cryptography`` library;
nothing here shells out to ``openssl``.

Keys live only in the demo's run directory (mode 0600) and are never logged.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Issued:
    """A private key and the certificate issued for it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        """The certificate in PEM form."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key in unencrypted PKCS#8 PEM form (demo only)."""
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mudguard demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(now: datetime, common_name: str = "mudguard demo test CA") -> Issued:
    """A self-signed CA certificate valid from a minute before ``now`` for two days."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(key, cert)


def _leaf(ca: Issued, common_name: str, now: datetime, usage: x509.ObjectIdentifier,
          san: list[x509.GeneralName] | None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(ca.cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=1))
               .not_valid_after(now + _VALIDITY)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                            crl_sign=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.cert.public_key()), critical=False))  # type: ignore[arg-type]
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def issue_server(ca: Issued, hostnames: list[str], now: datetime,
                 addresses: list[str] | None = None) -> Issued:
    """A TLS server certificate for ``hostnames`` (and optional IP addresses)."""
    san: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses or ()]
    return _leaf(ca, hostnames[0], now, ExtendedKeyUsageOID.SERVER_AUTH, san)


def issue_signer(ca: Issued, common_name: str, now: datetime) -> Issued:
    """A certificate a manufacturer signs its MUD files with."""
    return _leaf(ca, common_name, now, ExtendedKeyUsageOID.EMAIL_PROTECTION, None)


def sign_detached(data: bytes, signer: Issued) -> bytes:
    """A detached CMS SignedData (DER) over ``data`` (RFC 8520 §13), signer cert included."""
    return (pkcs7.PKCS7SignatureBuilder()
            .set_data(data)
            .add_signer(signer.cert, signer.key, hashes.SHA256())
            .sign(serialization.Encoding.DER,
                  [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable only by its owner."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
