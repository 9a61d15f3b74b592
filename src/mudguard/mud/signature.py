"""MUD file signatures: detached CMS SignedData (DER) over the file's exact bytes.

RFC 8520 §13 (https://www.rfc-editor.org/rfc/rfc8520#section-13): a MUD file is
signed with a detached CMS signature over its bytes as an opaque object, fetched
from ``mud-signature``; a manager checks it against its trust anchors. RFC 8520
also defines the 802.1AR certificate extension ``id-pe-mudsigner``
(1.3.6.1.5.5.7.1.30), the Name of whoever may sign the device's MUD file.

Theory of operation: parse the CMS with asn1crypto, find the signer's certificate,
check the message digest over the exact bytes, check the signature over the DER of
the signed attributes with cryptography, build a path to a configured trust
anchor, check every certificate's validity at ``at`` (a parameter, never the
clock), then the signer named by the device's certificate. Everything runs
in-process; nothing shells out to openssl. The result is a ``SignatureStatus``
whose ``reason`` is a stable key: ``expired``, ``untrusted``, ``bad_digest``,
``bad_signature``, ``wrong_signer`` or ``malformed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from mudguard.errors import RemoteInputError

MUD_SIGNER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.30")
"""RFC 8520 certificate extension id-pe-mudsigner, MUDsignerSyntax ::= Name."""
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_PATH_LENGTH = 8
# What asn1crypto and cryptography raise on damaged DER (found by the property tests;
# AttributeError: a damaged tag can turn a field into another ASN.1 type). Each fails closed.
_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError,
                 UnsupportedAlgorithm,
                 x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}


class SignatureState(StrEnum):
    """Whether a MUD file's signature may be relied on."""

    SIGNED_VALID = "signed_valid"
    UNSIGNED = "unsigned"
    INVALID = "invalid"


class SignatureReason(StrEnum):
    """Why a signature is invalid (stable keys for UIs: ``mud_signature_<reason>``)."""

    EXPIRED = "expired"
    UNTRUSTED = "untrusted"
    BAD_DIGEST = "bad_digest"
    BAD_SIGNATURE = "bad_signature"
    WRONG_SIGNER = "wrong_signer"
    MALFORMED = "malformed"


class SignatureError(RemoteInputError):
    """A MUD file's signature is invalid; ``reason`` is a ``SignatureReason``."""

    key = "mud_signature_invalid"

    def __init__(self, reason: SignatureReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureStatus:
    """The outcome of checking a MUD file's signature."""

    state: SignatureState
    reason: SignatureReason | None = None
    detail: str = ""
    signer_subject: str | None = None
    """The signer certificate's subject (RFC 4514), when one was found."""
    signer_identity: str | None = None
    """Who signed, as pinned for acceptable MUD URL updates (``signer_identity()``);
    set only for a valid signature."""

    @property
    def valid(self) -> bool:
        """True only for a signature that checked out."""
        return self.state is SignatureState.SIGNED_VALID

    def raise_if_invalid(self) -> None:
        """Raise ``SignatureError`` for an invalid signature (unsigned is not an error here)."""
        if self.state is SignatureState.INVALID:
            assert self.reason is not None
            raise SignatureError(self.reason, self.detail)


def unsigned() -> SignatureStatus:
    """The status of a file that has no signature."""
    return SignatureStatus(state=SignatureState.UNSIGNED, detail="no signature")


def _invalid(reason: SignatureReason, detail: str, signer: str | None = None) -> SignatureStatus:
    return SignatureStatus(state=SignatureState.INVALID, reason=reason, detail=detail,
                           signer_subject=signer)


def load_trust_anchors(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (raises ValueError if there is none)."""
    return x509.load_pem_x509_certificates(pem)


def mud_signer_of(device_cert: x509.Certificate) -> x509.Name | None:
    """The MUD signer an 802.1AR device certificate names (RFC 8520 id-pe-mudsigner), if any."""
    try:
        extension = device_cert.extensions.get_extension_for_oid(MUD_SIGNER_OID)
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else None
    if raw is None:
        return None
    return _name_from_der(raw)


def _name_from_der(raw: bytes) -> x509.Name | None:
    """A DER Name as a cryptography Name (which has no DER loader of its own)."""
    try:
        name = asn1_x509.Name.load(raw, strict=True)
        rdns = []
        for rdn in name.chosen:
            attributes = []
            for pair in rdn:
                value = pair["value"].native
                if not isinstance(value, str):
                    return None
                attributes.append(x509.NameAttribute(
                    x509.ObjectIdentifier(pair["type"].dotted), value))
            rdns.append(x509.RelativeDistinguishedName(attributes))
        return x509.Name(rdns)
    except (ValueError, TypeError, KeyError):
        return None


def _same_name(a: x509.Name, b: x509.Name) -> bool:
    # asn1crypto compares Names after RFC 5280 §7.1 normalisation (case, spaces).
    return bool(asn1_x509.Name.load(a.public_bytes()) == asn1_x509.Name.load(b.public_bytes()))


def verify_mud_signature(
    data: bytes,
    signature: bytes,
    *,
    trust_anchors: Sequence[x509.Certificate],
    at: datetime,
    expected_signer: x509.Name | None = None,
    device_cert: x509.Certificate | None = None,
) -> SignatureStatus:
    """Check a detached CMS signature over a MUD file's exact bytes.

    Args:
        data: the MUD file exactly as fetched.
        signature: the DER CMS SignedData from the ``mud-signature`` URL.
        trust_anchors: the certificates the owner trusts to sign MUD files.
        at: the time the check is made for (certificate validity).
        expected_signer: if given, the signer certificate's subject must equal it.
        device_cert: an 802.1AR device certificate; if it carries the MUD signer
            extension, the signer certificate's subject must equal that name.

    Returns:
        A ``SignatureStatus``: signed_valid, or invalid with a reason key.
    """
    if len(signature) > MAX_SIGNATURE_BYTES:
        return _invalid(SignatureReason.MALFORMED, f"signature larger than {MAX_SIGNATURE_BYTES}")
    try:
        signed_data = _signed_data(signature)
        embedded = _embedded_certificates(signed_data)
        signer_infos = list(signed_data["signer_infos"])
    except _PARSE_ERRORS as exc:
        return _invalid(SignatureReason.MALFORMED, f"not a CMS SignedData: {exc}")
    if not signer_infos:
        return _invalid(SignatureReason.MALFORMED, "no signer in the SignedData")
    try:
        results = [_check_signer(info, data, embedded, trust_anchors, at)
                   for info in signer_infos]
    except _PARSE_ERRORS as exc:
        # asn1crypto parses lazily: a damaged field deep inside surfaces only when read.
        return _invalid(SignatureReason.MALFORMED, f"unreadable signer information: {exc}")
    valid = next((r for r in results if r[0].valid), None)
    if valid is None:
        return results[0][0]
    status, signer_cert = valid
    wanted = expected_signer
    if device_cert is not None:
        named = mud_signer_of(device_cert)
        wanted = named if named is not None else wanted
    if wanted is not None and (signer_cert is None or not _same_name(signer_cert.subject, wanted)):
        return _invalid(SignatureReason.WRONG_SIGNER,
                        f"signed by {status.signer_subject}, but the device names "
                        f"{_describe_name(wanted)}", status.signer_subject)
    return status


def _describe_name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except (ValueError, TypeError):
        return "an unreadable name"


def check_mud_signature(data: bytes, signature: bytes | None, *,
                        trust_anchors: Sequence[x509.Certificate], at: datetime,
                        device_cert: x509.Certificate | None = None) -> SignatureStatus:
    """``verify_mud_signature``, or ``unsigned`` when the file has no signature."""
    if signature is None:
        return unsigned()
    return verify_mud_signature(data, signature, trust_anchors=trust_anchors, at=at,
                                device_cert=device_cert)


def _signed_data(signature: bytes) -> asn1_cms.SignedData:
    info = asn1_cms.ContentInfo.load(signature, strict=True)
    if info["content_type"].native != "signed_data":
        raise ValueError(f"content type {info['content_type'].native}, not signed_data")
    signed = info["content"]
    signed.native  # noqa: B018  (asn1crypto parses lazily; fail here, not later)
    encapsulated = signed["encap_content_info"]
    if encapsulated["content_type"].native != "data":
        raise ValueError("the signed content is not of type data")
    if encapsulated["content"].native is not None:
        # RFC 8520 §13.2: the signature is detached; an embedded copy would let a
        # signature vouch for bytes other than the file fetched.
        raise ValueError("the signature carries content; a detached signature is required")
    assert isinstance(signed, asn1_cms.SignedData)
    return signed


def _embedded_certificates(signed: asn1_cms.SignedData) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        out.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    return out


def _find_signer(info: asn1_cms.SignerInfo, candidates: Sequence[x509.Certificate]
                 ) -> x509.Certificate | None:
    sid = info["sid"]
    for cert in candidates:
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            issuer = asn1_x509.Name.load(cert.issuer.public_bytes())
            if cert.serial_number == wanted["serial_number"].native and issuer == wanted["issuer"]:
                return cert
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == sid.chosen.native:
                return cert
    return None


def _check_signer(info: asn1_cms.SignerInfo, data: bytes, embedded: list[x509.Certificate],
                  anchors: Sequence[x509.Certificate], at: datetime
                  ) -> tuple[SignatureStatus, x509.Certificate | None]:
    signer = _find_signer(info, [*embedded, *anchors])
    if signer is None:
        return _invalid(SignatureReason.UNTRUSTED,
                        "the signer's certificate is neither in the signature nor trusted"), None
    return _check_with(signer, info, data, embedded, anchors, at), signer


def _check_with(signer: x509.Certificate, info: asn1_cms.SignerInfo, data: bytes,
                embedded: list[x509.Certificate], anchors: Sequence[x509.Certificate],
                at: datetime) -> SignatureStatus:
    subject = signer.subject.rfc4514_string()
    digest_name = info["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        return _invalid(SignatureReason.MALFORMED, f"digest {digest_name} is not accepted",
                        subject)
    hash_algorithm = _HASHES[digest_name]()
    digest = hashes.Hash(hash_algorithm)
    digest.update(data)
    content_digest = digest.finalize()
    signed_attrs = info["signed_attrs"]
    if signed_attrs.native is not None and len(signed_attrs) > 0:
        attrs = {a["type"].native: a["values"] for a in signed_attrs}
        if "message_digest" not in attrs or "content_type" not in attrs:
            # RFC 5652 §5.3: with signed attributes, both are mandatory.
            return _invalid(SignatureReason.MALFORMED, "signed attributes lack message-digest "
                            "or content-type", subject)
        if attrs["content_type"][0].native != "data":
            return _invalid(SignatureReason.MALFORMED, "signed content type is not data", subject)
        if attrs["message_digest"][0].native != content_digest:
            return _invalid(SignatureReason.BAD_DIGEST,
                            "the file's digest differs from the signed one: the file was changed",
                            subject)
        # RFC 5652 §5.4: the signature covers the DER of the attributes as a SET OF.
        signed_bytes = b"\x31" + signed_attrs.dump()[1:]
    else:
        signed_bytes = data
    problem = _verify_raw(signer, info, bytes(info["signature"].native), signed_bytes,
                          hash_algorithm)
    if problem is not None:
        return _invalid(SignatureReason.BAD_SIGNATURE, problem, subject)
    path_problem = _chain(signer, embedded, anchors, at)
    if path_problem is not None:
        return _invalid(path_problem[0], path_problem[1], subject)
    return SignatureStatus(state=SignatureState.SIGNED_VALID, signer_subject=subject,
                           detail=f"signed by {subject}",
                           signer_identity=signer_identity(signer, embedded, anchors))


def _key_id(cert: x509.Certificate) -> str:
    """The certificate's subject key identifier (its extension, else RFC 5280
    §4.2.1.2 method 1 over its public key), in hex."""
    try:
        return cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest.hex()


def signer_identity(signer: x509.Certificate, embedded: Sequence[x509.Certificate],
                    anchors: Sequence[x509.Certificate]) -> str:
    """The signer as draft-ietf-iotops-mud-acceptable-urls-00 §5 pins it: "an equivalent
    End Entity (same trusted CA and same Subject Name)", the CA named by its subject key
    identifier. So ``"<EE subject> (CA key <SKI of the certificate that issued it>)"``:
    a renewed signing certificate (new key, same name, same CA) keeps the identity;
    another product's signing name, or the same name under another CA, does not. A
    self-issued signer that is itself a trust anchor is its own CA."""
    subject = signer.subject.rfc4514_string()
    if any(signer == anchor for anchor in anchors):
        issuer: x509.Certificate | None = signer
    else:
        issuer = _issuer_among(signer, anchors) or _issuer_among(
            signer, [c for c in embedded if c != signer and _is_ca(c)])
    ca = _key_id(issuer) if issuer is not None else "unknown"
    return f"{subject} (CA key {ca})"


def _verify_raw(cert: x509.Certificate, info: asn1_cms.SignerInfo, signature: bytes,
                message: bytes, hash_algorithm: hashes.HashAlgorithm) -> str | None:
    algorithm = info["signature_algorithm"]
    name = algorithm.signature_algo
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and name == "ecdsa":
            key.verify(signature, message, ec.ECDSA(hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and name == "rsassa_pkcs1v15":
            key.verify(signature, message, padding.PKCS1v15(), hash_algorithm)
        elif isinstance(key, rsa.RSAPublicKey) and name == "rsassa_pss":
            params = algorithm["parameters"]
            key.verify(signature, message,
                       padding.PSS(mgf=padding.MGF1(hash_algorithm),
                                   salt_length=int(params["salt_length"].native)),
                       hash_algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey) and name == "ed25519":
            key.verify(signature, message)
        else:
            return f"signature algorithm {name} does not fit the signer's key"
    except InvalidSignature:
        return "the signature does not match the signer's key"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"the signature cannot be checked: {exc}"
    return None


def _chain(signer: x509.Certificate, embedded: list[x509.Certificate],
           anchors: Sequence[x509.Certificate], at: datetime
           ) -> tuple[SignatureReason, str] | None:
    """Build signer → … → trust anchor; check each link's signature and validity at ``at``."""
    path = [signer]
    current = signer
    for _ in range(MAX_PATH_LENGTH):
        if any(current == anchor for anchor in anchors):
            break
        parent = _issuer_among(current, anchors)
        if parent is None:
            parent = _issuer_among(current, [c for c in embedded if c not in path and _is_ca(c)])
            if parent is None:
                return (SignatureReason.UNTRUSTED,
                        f"no path from {current.subject.rfc4514_string()} to a trust anchor")
        path.append(parent)
        current = parent
        if any(parent == anchor for anchor in anchors):
            break
    else:
        return SignatureReason.UNTRUSTED, "certificate path too long"
    for cert in path:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            when = ("expired on " + cert.not_valid_after_utc.isoformat()
                    if at > cert.not_valid_after_utc
                    else "not valid before " + cert.not_valid_before_utc.isoformat())
            return SignatureReason.EXPIRED, f"{cert.subject.rfc4514_string()} {when}"
    problem = _key_usage_problem(signer)
    if problem is not None:
        return SignatureReason.UNTRUSTED, problem
    return None


def _issuer_among(cert: x509.Certificate, candidates: Sequence[x509.Certificate]
                  ) -> x509.Certificate | None:
    for candidate in candidates:
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _key_usage_problem(signer: x509.Certificate) -> str | None:
    try:
        usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not (usage.digital_signature or usage.content_commitment):
        return "the signer's key usage does not allow signing"
    return None


def sign_mud(data: bytes, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
             cert: x509.Certificate, chain: Sequence[x509.Certificate] = ()) -> bytes:
    """A detached CMS SignedData (DER) over ``data``, for manufacturers (RFC 8520 §13.2).

    The signer's certificate and ``chain`` are embedded so a verifier holding only
    the root can build the path. Binary mode: the bytes are signed exactly as given.
    """
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(cert, key, hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.DER,
                        [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
