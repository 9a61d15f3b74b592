"""Signed by its maker, unsigned, or forged: what the owner is told before onboarding.

A CA and a MUD signer made here sign a MUD file with a detached CMS signature
(cryptography's PKCS#7 builder); the real verifier (``mud.signature`` through the
composition root's ``signature_verifier``) checks it at the time the service's clock
gives.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from mudguard.app import signature_verifier
from mudguard.portal import create_app
from tests.unit.test_portal_support import first_start, mud_document, page_csrf, stack, text_of

START = datetime(2026, 1, 1, tzinfo=UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Lighting"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _signer(tmp: Path, name: str = "roots.pem") -> tuple[Path, Any, Any]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Example Lighting MUD CA"))
          .issuer_name(_name("Example Lighting MUD CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(START)
          .not_valid_after(START + timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("Example Lighting MUD signer"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(START)
            .not_valid_after(START + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    roots = tmp / name
    roots.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return roots, cert, key


def _sign(data: bytes, cert: Any, key: Any) -> bytes:
    return (pkcs7.PKCS7SignatureBuilder().set_data(data)
            .add_signer(cert, key, hashes.SHA256())
            .sign(serialization.Encoding.DER,
                  [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))


def _serve_signed(st: Any, cert: Any, key: Any, *, forge: bool = False) -> str:
    url = st.server.url("/signed.json")
    doc = mud_document(url, **{"mud-signature": st.server.url("/signed.p7s")})
    data = json.dumps(doc).encode()
    st.server.files["/signed.p7s"] = (_sign(data, cert, key), "application/pkcs7-signature")
    if forge:  # the server's copy was changed after signing: a wider policy slipped in
        doc["ietf-mud:mud"]["systeminfo"] = "Example smart bulb (now with telnet)"
        data = json.dumps(doc).encode()
    st.server.files["/signed.json"] = (data, "application/mud+json")
    return url


def _preview(tmp: Path, *, forge: bool = False, at: datetime = START + timedelta(days=30),
             trusted: bool = True) -> tuple[dict[str, Any], str]:
    roots, cert, key = _signer(tmp)
    if not trusted:
        roots, _, _ = _signer(tmp, "other-roots.pem")
    with stack(tmp, verify=signature_verifier(roots), clock=lambda: at) as st:
        url = _serve_signed(st, cert, key, forge=forge)
        client = TestClient(create_app(st.services, st.settings), base_url="http://portal.test")
        first_start(client)
        page = client.post("/onboard/check", data={"csrf": page_csrf(client, "/onboard"),
                                                    "mud_url": url, "mac": "00:11:22:33:44:55"})
        api = client.post("/api/onboard/preview", json={"mud_url": url},
                          headers={"X-CSRF-Token": page_csrf(client)}).json()
        return api, page.text


def test_signed_by_its_maker(tmp_path: Path) -> None:
    api, html = _preview(tmp_path)
    assert (api["signature"], api["signature_error"]) == ("signed_valid", None)
    assert "Example Lighting MUD signer" in api["signer"]
    assert "Signed by its maker (signature checked)" in text_of(html)
    assert "/onboard/accept" in html


def test_forged_file_is_flagged_and_cannot_be_accepted(tmp_path: Path) -> None:
    api, html = _preview(tmp_path, forge=True)
    assert api["signature"] == "invalid" and not api["usable"]
    assert api["signature_error"] == "mud_signature_bad_digest"
    assert "changed after it was signed" in text_of(html)
    assert "/onboard/accept" not in html


def test_expired_signer(tmp_path: Path) -> None:
    api, html = _preview(tmp_path, at=START + timedelta(days=400))
    assert (api["signature"], api["signature_error"]) == ("invalid", "mud_signature_expired")
    assert "has expired" in text_of(html)


def test_untrusted_signer(tmp_path: Path) -> None:
    api, _ = _preview(tmp_path, trusted=False)
    assert (api["signature"], api["signature_error"]) == ("invalid", "mud_signature_untrusted")
