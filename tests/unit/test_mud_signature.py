"""MUD signatures (RFC 8520 §13.2): the corpus's signed sample and round trips with test keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mudguard.mud.signature import (
    MUD_SIGNER_OID,
    SignatureError,
    SignatureReason,
    SignatureState,
    check_mud_signature,
    load_trust_anchors,
    mud_signer_of,
    sign_mud,
    verify_mud_signature,
)
from tests.conftest import CORPUS
from tests.unit.test_mud_fetch import Issued, make_cert

BEFORE_EXPIRY = datetime(2019, 1, 1, tzinfo=UTC)
LUMINAIRE_SIGNER = "CN=luminaire.example.com,O=Demo Luminaire Manufacturer"


@pytest.fixture(scope="module")
def luminaire(corpus: Path) -> tuple[bytes, bytes, list[x509.Certificate]]:
    folder = corpus / "mud" / "signed"
    return ((folder / "Luminaire_150.json").read_bytes(),
            (folder / "Luminaire_150.p7s").read_bytes(),
            load_trust_anchors((folder / "luminaire-cacert.pem").read_bytes()))


def test_luminaire_verifies_before_its_certificates_expired(
        luminaire: tuple[bytes, bytes, list[x509.Certificate]]) -> None:
    data, signature, anchors = luminaire
    status = verify_mud_signature(data, signature, trust_anchors=anchors, at=BEFORE_EXPIRY)
    assert status.state is SignatureState.SIGNED_VALID and status.valid
    assert status.signer_subject == LUMINAIRE_SIGNER


def test_luminaire_is_expired_now(luminaire: tuple[bytes, bytes, list[x509.Certificate]]
                                  ) -> None:
    data, signature, anchors = luminaire
    status = verify_mud_signature(data, signature, trust_anchors=anchors,
                                  at=datetime.now(UTC))
    assert (status.state, status.reason) == (SignatureState.INVALID, SignatureReason.EXPIRED)
    assert status.detail == "O=Demo Luminaire Manufacturer expired on 2019-07-12T20:54:35+00:00"
    with pytest.raises(SignatureError) as caught:
        status.raise_if_invalid()
    assert caught.value.reason is SignatureReason.EXPIRED


def test_luminaire_fails_on_changed_bytes(
        luminaire: tuple[bytes, bytes, list[x509.Certificate]]) -> None:
    data, signature, anchors = luminaire
    # Every 5th byte and both ends (each check parses the CMS again; all 4,395 take ~6 s).
    for i in sorted({*range(0, len(data), 5), 1, 2, len(data) - 2, len(data) - 1}):
        changed = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        status = verify_mud_signature(changed, signature, trust_anchors=anchors,
                                      at=BEFORE_EXPIRY)
        assert status.reason is SignatureReason.BAD_DIGEST, i
    for extra in (data + b"\n", data[:-1], b" " + data):
        status = verify_mud_signature(extra, signature, trust_anchors=anchors, at=BEFORE_EXPIRY)
        assert status.reason is SignatureReason.BAD_DIGEST


def test_luminaire_without_its_anchor_is_untrusted(
        luminaire: tuple[bytes, bytes, list[x509.Certificate]]) -> None:
    data, signature, _ = luminaire
    other = make_cert("some other CA", ca=True).cert
    status = verify_mud_signature(data, signature, trust_anchors=[other], at=BEFORE_EXPIRY)
    assert status.reason is SignatureReason.UNTRUSTED


@pytest.mark.parametrize("signature", [
    b"", b"\x00", b"not DER at all", b"\x30\x03\x02\x01\x01",
    asn1_cms.ContentInfo({"content_type": "data",
                          "content": asn1_cms.OctetString(b"x")}).dump(),
])
def test_malformed_signatures(signature: bytes,
                              luminaire: tuple[bytes, bytes, list[x509.Certificate]]) -> None:
    data, _, anchors = luminaire
    status = verify_mud_signature(data, signature, trust_anchors=anchors, at=BEFORE_EXPIRY)
    assert status.reason is SignatureReason.MALFORMED and status.detail


def test_truncated_corpus_signature_is_malformed(
        luminaire: tuple[bytes, bytes, list[x509.Certificate]]) -> None:
    data, signature, anchors = luminaire
    for cut in (1, 10, 100, len(signature) // 2):
        status = verify_mud_signature(data, signature[:-cut], trust_anchors=anchors,
                                      at=BEFORE_EXPIRY)
        assert status.reason is SignatureReason.MALFORMED


# -- round trips with keys the tests make --------------------------------------------------

MUD = b'{"ietf-mud:mud": {"mud-version": 1}}\n'


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    root = make_cert("Maker Root CA", ca=True)
    intermediate = make_cert("Maker MUD signing CA", ca=True, issuer=root)
    signer = make_cert("mud-signer.maker.example", issuer=intermediate)
    rsa_signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_signer = make_cert("rsa-signer.maker.example", issuer=intermediate)
    rsa_signer = Issued(key=rsa_signer_key, cert=(
        x509.CertificateBuilder().subject_name(rsa_signer.cert.subject)
        .issuer_name(intermediate.cert.subject).public_key(rsa_signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(rsa_signer.cert.not_valid_before_utc)
        .not_valid_after(rsa_signer.cert.not_valid_after_utc)
        .sign(intermediate.key, rsa_signer.cert.signature_hash_algorithm)))  # type: ignore[arg-type]
    rogue = make_cert("mud-signer.maker.example", ca=False)  # same name, not issued by the root
    return {"root": root, "intermediate": intermediate, "signer": signer, "rogue": rogue,
            "rsa": rsa_signer}


def now() -> datetime:
    return datetime.now(UTC)


def test_round_trip_ec(pki: dict[str, Issued]) -> None:
    signer = pki["signer"]
    signature = sign_mud(MUD, signer.key, signer.cert, [pki["intermediate"].cert])
    status = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now())
    assert status.valid, status
    assert status.signer_subject == "O=mudguard tests,CN=mud-signer.maker.example"


def test_round_trip_rsa(pki: dict[str, Issued]) -> None:
    signer = pki["rsa"]
    assert isinstance(signer.key, rsa.RSAPrivateKey)
    signature = sign_mud(MUD, signer.key, signer.cert, [pki["intermediate"].cert])
    status = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now())
    assert status.valid, status


def test_missing_intermediate_is_untrusted(pki: dict[str, Issued]) -> None:
    signer = pki["signer"]
    signature = sign_mud(MUD, signer.key, signer.cert)
    status = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now())
    assert status.reason is SignatureReason.UNTRUSTED
    with_intermediate_trusted = verify_mud_signature(
        MUD, signature, trust_anchors=[pki["intermediate"].cert], at=now())
    assert with_intermediate_trusted.valid


def test_tampered_file_is_rejected(pki: dict[str, Issued]) -> None:
    signer = pki["signer"]
    signature = sign_mud(MUD, signer.key, signer.cert, [pki["intermediate"].cert])
    tampered = MUD.replace(b"1", b"2")
    status = verify_mud_signature(tampered, signature, trust_anchors=[pki["root"].cert],
                                  at=now())
    assert status.reason is SignatureReason.BAD_DIGEST


def test_forged_signature_value_is_rejected(pki: dict[str, Issued]) -> None:
    """Right digest, signature made by another key: bad_signature."""
    signer = pki["signer"]
    genuine = asn1_cms.ContentInfo.load(
        sign_mud(MUD, signer.key, signer.cert, [pki["intermediate"].cert]))
    other = asn1_cms.ContentInfo.load(sign_mud(MUD, pki["rogue"].key, pki["rogue"].cert))
    genuine_info = genuine["content"]["signer_infos"][0]
    genuine_info["signature"] = other["content"]["signer_infos"][0]["signature"].native
    if genuine_info["signed_attrs"].native is not None:
        genuine_info["signed_attrs"] = other["content"]["signer_infos"][0]["signed_attrs"]
    status = verify_mud_signature(MUD, genuine.dump(force=True),
                                  trust_anchors=[pki["root"].cert], at=now())
    assert status.reason is SignatureReason.BAD_SIGNATURE


def test_self_made_certificate_with_the_right_name_is_untrusted(pki: dict[str, Issued]) -> None:
    rogue = pki["rogue"]
    signature = sign_mud(MUD, rogue.key, rogue.cert)
    status = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now())
    assert status.reason is SignatureReason.UNTRUSTED


def test_expired_signer_and_not_yet_valid(pki: dict[str, Issued]) -> None:
    signer = pki["signer"]
    signature = sign_mud(MUD, signer.key, signer.cert, [pki["intermediate"].cert])
    for at in (now() + timedelta(days=365), now() - timedelta(days=365)):
        status = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=at)
        assert status.reason is SignatureReason.EXPIRED


def test_signer_without_signing_key_usage_is_untrusted(pki: dict[str, Issued]) -> None:
    no_sign = make_cert("encrypt-only.maker.example", issuer=pki["intermediate"], extensions=(
        x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=True,
                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                      crl_sign=False, encipher_only=False, decipher_only=False),))
    signature = sign_mud(MUD, no_sign.key, no_sign.cert, [pki["intermediate"].cert])
    status = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now())
    assert status.reason is SignatureReason.UNTRUSTED
    assert "key usage" in status.detail


def device_certificate(pki: dict[str, Issued], signer_name: x509.Name | None) -> x509.Certificate:
    """An 802.1AR-style device certificate, optionally naming its MUD signer (id-pe-mudsigner)."""
    extensions: tuple[x509.ExtensionType, ...] = ()
    if signer_name is not None:
        extensions = (x509.UnrecognizedExtension(MUD_SIGNER_OID, signer_name.public_bytes()),)
    return make_cert("lamp-serial-0001", issuer=pki["root"], extensions=extensions).cert


def test_device_certificate_names_the_signer(pki: dict[str, Issued]) -> None:
    signer = pki["signer"]
    signature = sign_mud(MUD, signer.key, signer.cert, [pki["intermediate"].cert])
    right = device_certificate(pki, signer.cert.subject)
    assert mud_signer_of(right) == signer.cert.subject
    status = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now(),
                                  device_cert=right)
    assert status.valid


def test_wrong_signer_is_rejected(pki: dict[str, Issued]) -> None:
    """Signed by a trusted key, but not the one the device's certificate names."""
    signer = pki["signer"]
    signature = sign_mud(MUD, signer.key, signer.cert, [pki["intermediate"].cert])
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone-else.example")])
    status = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now(),
                                  device_cert=device_certificate(pki, other))
    assert status.reason is SignatureReason.WRONG_SIGNER
    assert status.detail == ("signed by O=mudguard tests,CN=mud-signer.maker.example, but the "
                             "device names CN=someone-else.example")
    direct = verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now(),
                                  expected_signer=other)
    assert direct.reason is SignatureReason.WRONG_SIGNER


def test_device_certificate_without_the_extension_adds_no_constraint(
        pki: dict[str, Issued]) -> None:
    signer = pki["signer"]
    plain = device_certificate(pki, None)
    assert mud_signer_of(plain) is None
    signature = sign_mud(MUD, signer.key, signer.cert, [pki["intermediate"].cert])
    assert verify_mud_signature(MUD, signature, trust_anchors=[pki["root"].cert], at=now(),
                                device_cert=plain).valid


def test_unsigned_file() -> None:
    status = check_mud_signature(MUD, None, trust_anchors=[], at=now())
    assert status.state is SignatureState.UNSIGNED and not status.valid
    status.raise_if_invalid()  # unsigned is the owner's choice, not an error here


# -- hostile signatures never crash the verifier ----------------------------------------------

LUMINAIRE = CORPUS / "mud" / "signed"


# Mutations can give an embedded certificate a non-positive serial; cryptography warns
# (and will refuse such certificates later, which the verifier already reports as malformed).
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_signatures_never_crash(data: st.DataObject) -> None:
    mud = (LUMINAIRE / "Luminaire_150.json").read_bytes()
    signature = bytearray((LUMINAIRE / "Luminaire_150.p7s").read_bytes())
    anchors = load_trust_anchors((LUMINAIRE / "luminaire-cacert.pem").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(signature) - 1))
        signature[i] = data.draw(st.integers(0, 255))
    status = verify_mud_signature(mud, bytes(signature), trust_anchors=anchors,
                                  at=BEFORE_EXPIRY)
    assert status.state in (SignatureState.SIGNED_VALID, SignatureState.INVALID)
    if status.state is SignatureState.INVALID:
        assert status.reason is not None and status.detail


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_malformed(signature: bytes) -> None:
    status = verify_mud_signature(MUD, signature, trust_anchors=[], at=BEFORE_EXPIRY)
    assert status.state is SignatureState.INVALID and status.reason is not None
