"""The MUD URL in a device's IEEE 802.1AR (IDevID) certificate (RFC 8520 §10, §11).

RFC 8520 §10: the extension ``id-pe-mud-url`` (1.3.6.1.5.5.7.1.25) holds
``MUDURLSyntax ::= IA5String``, and ``id-pe-mudsigner`` (1.3.6.1.5.5.7.1.30) holds
``MUDsignerSyntax ::= Name``, the subject that must have signed the MUD file.
The certificate reaches the gateway during 802.1X/EAP-TLS or from the owner; this
module only parses it (with ``cryptography``; the extension values with
asn1crypto). Trust in the certificate itself (chain to the maker's CA) is the
authenticator's job; the URL still obeys every RFC 8520 rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from mudguard.devices._model import MudSource
from mudguard.devices.lifecycle import MudUrlError, check_mud_url
from mudguard.discovery.sighting import Sighting
from mudguard.errors import RemoteInputError

OID_MUD_URL = ObjectIdentifier("1.3.6.1.5.5.7.1.25")
OID_MUD_SIGNER = ObjectIdentifier("1.3.6.1.5.5.7.1.30")
MAX_CERT_BYTES = 16 * 1024


class CertificateError(RemoteInputError):
    """A certificate that cannot be read, or whose MUD extensions are malformed."""

    key = "bad_certificate"


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """What a device's certificate says about its MUD file."""

    subject: str
    serial_number: str  # the device's serial (subject serialNumber) if present
    mud_url: str | None
    mud_signer: str | None  # RFC 4514 string of the expected signer's name

    def sighting(self, mac: str) -> Sighting:
        """The certificate as a discovery sighting for the device at ``mac``."""
        return Sighting(mac=mac, source=MudSource.CERT, mud_url=self.mud_url)


def load_certificate(data: bytes) -> x509.Certificate:
    """Load a PEM or DER certificate; raise ``CertificateError``."""
    if len(data) > MAX_CERT_BYTES:
        raise CertificateError(f"certificate of {len(data)} bytes; limit {MAX_CERT_BYTES}")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"not an X.509 certificate: {exc}") from None


def _raw_extension(cert: x509.Certificate, oid: ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or malformed extensions
        raise CertificateError(f"certificate extensions are malformed: {exc}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateError(f"unexpected decoding of extension {oid.dotted_string}")
    return value.value


def parse_device_certificate(data: bytes) -> DeviceCertificate:
    """Read the MUD URL and MUD signer extensions of a device certificate.

    Raises ``CertificateError`` if the certificate or an extension is malformed or
    the MUD URL breaks RFC 8520 (e.g. not https).
    """
    cert = load_certificate(data)
    url: str | None = None
    raw_url = _raw_extension(cert, OID_MUD_URL)
    if raw_url is not None:
        try:
            url = check_mud_url(str(asn1_core.IA5String.load(raw_url, strict=True).native))
        except MudUrlError as exc:
            raise CertificateError(f"MUD URL extension: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"MUD URL extension is not an IA5String: {exc}") from None
    signer: str | None = None
    raw_signer = _raw_extension(cert, OID_MUD_SIGNER)
    if raw_signer is not None:
        try:
            name = asn1_x509.Name.load(raw_signer, strict=True)
            signer = _to_name(name).rfc4514_string() or None
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"MUD signer extension is not a Name: {exc}") from None
    serials = cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    return DeviceCertificate(subject=cert.subject.rfc4514_string(),
                             serial_number=str(serials[0].value) if serials else "",
                             mud_url=url, mud_signer=signer)


def _to_name(name: asn1_x509.Name) -> x509.Name:
    # Rebuilt as cryptography's Name so the signer compares equal to a signing
    # certificate's ``subject.rfc4514_string()`` in the signature check.
    return x509.Name([
        x509.RelativeDistinguishedName([
            x509.NameAttribute(ObjectIdentifier(attribute["type"].dotted),
                               str(attribute["value"].native))
            for attribute in rdn])
        for rdn in name.chosen])
