"""``mudguard mud check|show|sign|verify`` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from mudguard.cli.main import app
from tests.unit.test_mud_fetch import make_cert
from tests.unit.test_mud_parse import base

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["mud", *args], env=env)
    return result.exit_code, " ".join(result.output.split())


def test_check_valid_file(corpus: Path) -> None:
    code, out = run("check", str(corpus / "mud/rfc/brother-DCP-L2540DW.json"))
    assert (code, out) == (0, "valid (0 warnings)")


def test_check_draft_era_file_is_usable_with_warnings(corpus: Path) -> None:
    code, out = run("check", str(corpus / "mud/unsw/HueBulbMud.json"))
    assert code == 0
    assert "warning: access-lists: draft-era container name" in out
    assert out.endswith("valid (8 warnings)")


def test_check_invalid_file_lists_errors(corpus: Path) -> None:
    code, out = run("check", str(corpus / "mud/unsw/augustdoorbellcamMud.json"))
    assert code == 1
    assert ("error: acls.acl[2].aces.ace[2].matches.ipv6.destination-ipv6-network: expected an "
            "IPv6 prefix like 2001:db8::/32, got '192.168.1.1'") in out
    assert out.endswith("invalid (1 errors)")


def test_check_json(corpus: Path) -> None:
    result = runner.invoke(app, ["mud", "check", "--json",
                                 str(corpus / "mud/unsw/augustdoorbellcamMud.json")])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["valid"] is False
    errors = [f for f in payload["findings"] if f["severity"] == "error"]
    assert errors == [{"path": "acls.acl[2].aces.ace[2].matches.ipv6.destination-ipv6-network",
                       "severity": "error",
                       "message": "expected an IPv6 prefix like 2001:db8::/32, got "
                                  "'192.168.1.1'"}]


def test_check_missing_file() -> None:
    code, out = run("check", "/nonexistent/mud.json")
    assert code == 2 and "no such file" in out


@pytest.mark.parametrize(("url", "key"), [
    ("http://mud.example.com/x.json", "not_https"),
    ("https://127.0.0.1/x.json", "blocked_address"),
    ("https://[::1]/x.json", "blocked_address"),
])
def test_check_url_failures_are_clear(url: str, key: str) -> None:
    code, out = run("check", url)
    assert code == 1 and f"error ({key}):" in out and "Traceback" not in out


def test_show_summarises_both_directions(corpus: Path) -> None:
    code, out = run("show", str(corpus / "mud/rfc/nist-mudfile-mfg-test.json"))
    assert code == 0
    assert out.startswith("Extra super device MUD URL: https://mfgtest.nist.local/super1")
    assert "Outgoing The device may send to devices made by toothbrush.nist.local" in out
    assert "Incoming The device may receive from" in out
    assert out.endswith("Everything else is blocked.")


def test_show_marks_draft_era(corpus: Path) -> None:
    code, out = run("show", str(corpus / "mud/unsw/HueBulbMud.json"))
    assert code == 0 and "pre-standard (draft-era) file, normalised" in out


def test_verify_luminaire(corpus: Path) -> None:
    folder = corpus / "mud/signed"
    args = ("verify", str(folder / "Luminaire_150.json"), str(folder / "Luminaire_150.p7s"),
            "--trust", str(folder / "luminaire-cacert.pem"))
    code, out = run(*args, "--at", "2019-01-01")
    assert (code, out) == (0, "valid: signed by CN=luminaire.example.com,O=Demo Luminaire "
                              "Manufacturer")
    code, out = run(*args)
    assert code == 1 and out.startswith("invalid (expired): O=Demo Luminaire Manufacturer "
                                        "expired on 2019-07-12")


def test_verify_tampered_file(corpus: Path, tmp_path: Path) -> None:
    folder = corpus / "mud/signed"
    tampered = tmp_path / "Luminaire_150.json"
    tampered.write_bytes((folder / "Luminaire_150.json").read_bytes().replace(b"443", b"444"))
    code, out = run("verify", str(tampered), str(folder / "Luminaire_150.p7s"),
                    "--trust", str(folder / "luminaire-cacert.pem"), "--at", "2019-01-01")
    assert code == 1 and out.startswith("invalid (bad_digest)")


def test_verify_needs_a_trust_anchor(corpus: Path) -> None:
    folder = corpus / "mud/signed"
    code, out = run("verify", str(folder / "Luminaire_150.json"),
                    str(folder / "Luminaire_150.p7s"))
    assert code == 2 and "--trust" in out


def test_verify_bad_date(corpus: Path) -> None:
    folder = corpus / "mud/signed"
    code, out = run("verify", str(folder / "Luminaire_150.json"),
                    str(folder / "Luminaire_150.p7s"), "--trust",
                    str(folder / "luminaire-cacert.pem"), "--at", "last tuesday")
    assert code == 2 and "expected a date" in out


def test_verify_unsigned_file_without_signature(corpus: Path) -> None:
    folder = corpus / "mud/signed"
    code, out = run("verify", str(corpus / "mud/rfc/brother-DCP-L2540DW.json"),
                    "--trust", str(folder / "luminaire-cacert.pem"))
    assert code == 1 and out.startswith("invalid (unsigned)")


@pytest.fixture()
def maker(tmp_path: Path) -> dict[str, Path]:
    """A manufacturer's root, signing certificate and encrypted key, and a MUD file."""
    root = make_cert("Maker Root", ca=True)
    signer = make_cert("mud-signer.maker.example", issuer=root)
    files = {"root": tmp_path / "root.pem", "cert": tmp_path / "signer.pem",
             "key": tmp_path / "signer.key", "mud": tmp_path / "lamp.json",
             "sig": tmp_path / "lamp.p7s"}
    files["root"].write_bytes(root.cert_pem())
    files["cert"].write_bytes(signer.cert_pem())
    files["key"].write_bytes(signer.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret-passphrase")))
    files["mud"].write_text(json.dumps(base(), indent=2))
    return files


def test_sign_then_verify(maker: dict[str, Path]) -> None:
    env = {"MUDGUARD_KEY_PASSPHRASE": "s3cret-passphrase"}
    code, out = run("sign", str(maker["mud"]), "--key", str(maker["key"]), "--cert",
                    str(maker["cert"]), "-o", str(maker["sig"]), env=env)
    assert code == 0, out
    assert "s3cret" not in out
    assert maker["sig"].read_bytes()[:1] == b"\x30"
    code, out = run("verify", str(maker["mud"]), str(maker["sig"]), "--trust",
                    str(maker["root"]))
    assert (code, out) == (0, "valid: signed by O=mudguard tests,CN=mud-signer.maker.example")
    maker["mud"].write_bytes(maker["mud"].read_bytes() + b" ")
    code, out = run("verify", str(maker["mud"]), str(maker["sig"]), "--trust",
                    str(maker["root"]))
    assert code == 1 and out.startswith("invalid (bad_digest)")


def test_sign_prompts_for_the_passphrase(maker: dict[str, Path]) -> None:
    result = runner.invoke(app, ["mud", "sign", str(maker["mud"]), "--key", str(maker["key"]),
                                 "--cert", str(maker["cert"]), "-o", str(maker["sig"])],
                           input="s3cret-passphrase\n")
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output


def test_sign_wrong_passphrase(maker: dict[str, Path]) -> None:
    code, out = run("sign", str(maker["mud"]), "--key", str(maker["key"]), "--cert",
                    str(maker["cert"]), "-o", str(maker["sig"]),
                    env={"MUDGUARD_KEY_PASSPHRASE": "Qz7-not-it"})
    assert code == 2 and "Qz7-not-it" not in out and "could not decrypt" in out
    assert not maker["sig"].exists()


def test_sign_refuses_an_invalid_file(maker: dict[str, Path], corpus: Path) -> None:
    code, out = run("sign", str(corpus / "mud/unsw/augustdoorbellcamMud.json"), "--key",
                    str(maker["key"]), "--cert", str(maker["cert"]), "-o", str(maker["sig"]))
    assert code == 1 and "refusing to sign an invalid MUD file" in out
    assert not maker["sig"].exists()
