"""ClientHello parsing (real OpenSSL hellos, hand-built DTLS, hostile bytes) and the
RFC 9761 matcher: ClientHello vs profile -> deviations with clear reasons."""

from __future__ import annotations

import contextlib
import json
import ssl
import struct
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mudguard.mud import parse_mud
from mudguard.mud.tls_profile import TlsProfile
from mudguard.watch.clienthello import (
    ClientHello,
    ClientHelloError,
    parse_client_hello,
    transport_payload,
)
from mudguard.watch.tls import TlsObservation, check_hello, judge, profiled_aces

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "mud-extensions" / \
    "rfc9761-tls-profile.json"


def openssl_hello(*, versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
                  alpn: list[str] | None = None, ciphers: str | None = None,
                  name: str = "cloud.example.com") -> bytes:
    """The first flight of Python's ssl client (the real ClientHello, as sent on TCP)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if versions is not None:
            ctx.minimum_version, ctx.maximum_version = versions
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


TLS13 = (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)
TLS10 = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1)


def test_a_tls13_client_hello() -> None:
    hello = parse_client_hello(openssl_hello(versions=TLS13, alpn=["mqtt"]))
    assert not hello.dtls and hello.complete
    assert hello.legacy_version == 0x0303 and hello.offered_versions == (0x0304,)
    assert set(hello.cipher_suites or ()) >= {0x1301, 0x1302, 0x1303}
    assert hello.application_protocols == ("mqtt",)
    assert hello.server_name == "cloud.example.com"
    assert 29 in (hello.supported_groups or ())
    assert hello.psk_key_exchange_modes == (1,)
    assert hello.extension_types is not None and 43 in hello.extension_types


def test_a_tls10_client_hello() -> None:
    hello = parse_client_hello(openssl_hello(versions=TLS10, ciphers="DEFAULT:@SECLEVEL=0"))
    assert hello.offered_versions == (0x0301,) and hello.supported_versions is None
    assert 0x000A in (hello.cipher_suites or ()) or 0x002F in (hello.cipher_suites or ())


def dtls_hello(*, version: int = 0xFEFD, suites: tuple[int, ...] = (0xC0AE, 0x1301),
               extensions: bytes = b"", cookie: bytes = b"", fragment_cut: int = 0) -> bytes:
    """A DTLS ClientHello built by hand (RFC 6347 §4.2.1 / RFC 9147 §5.3)."""
    body = struct.pack("!H", version) + bytes(32) + b"\x00" + bytes([len(cookie)]) + cookie
    body += struct.pack("!H", 2 * len(suites)) + struct.pack(f"!{len(suites)}H", *suites)
    body += b"\x01\x00" + struct.pack("!H", len(extensions)) + extensions
    fragment = body[:len(body) - fragment_cut]
    handshake = bytes([1]) + len(body).to_bytes(3, "big") + b"\x00\x00" + bytes(3) + \
        len(fragment).to_bytes(3, "big") + fragment
    return struct.pack("!BHHHIH", 22, 0xFEFF, 0, 0, 0, len(handshake)) + handshake


def ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def alpn(*names: str) -> bytes:
    inner = b"".join(bytes([len(n)]) + n.encode() for n in names)
    return ext(16, struct.pack("!H", len(inner)) + inner)


def versions(*values: int) -> bytes:
    return ext(43, bytes([2 * len(values)]) + struct.pack(f"!{len(values)}H", *values))


def test_a_dtls13_client_hello() -> None:
    hello = parse_client_hello(dtls_hello(extensions=versions(0xFEFC) + alpn("coap"),
                                          cookie=b"abc"))
    assert hello.dtls and hello.complete
    assert hello.offered_versions == (0xFEFC,) and hello.cipher_suites == (0xC0AE, 0x1301)
    assert hello.application_protocols == ("coap",)


def test_a_cut_hello_keeps_what_was_read() -> None:
    full = openssl_hello(versions=TLS13, alpn=["mqtt"])
    hello = parse_client_hello(full[:150])
    assert not hello.complete
    assert hello.cipher_suites is not None  # before the cut
    assert hello.application_protocols is None  # beyond it: unknown, never guessed
    assert not parse_client_hello(dtls_hello(fragment_cut=3)).complete


@pytest.mark.parametrize(("payload", "message"), [
    (b"GET / HTTP/1.1\r\n", "not a TLS handshake record"),
    (b"\x17\x03\x03\x00\x05hello", "not a TLS handshake record"),
    (b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", "not a ClientHello"),
    (b"\x16\x07\x07\x00\x04\x01\x00\x00\x00", "not TLS or DTLS"),
    (b"\x16\x03\x01\x00\x00", "record length 0"),
    (b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x02\x00", "ClientHello version 0x0200"),
])
def test_what_is_not_a_client_hello(payload: bytes, message: str) -> None:
    with pytest.raises(ClientHelloError, match=message):
        parse_client_hello(payload)


def test_a_duplicate_extension_is_refused() -> None:
    with pytest.raises(ClientHelloError, match="sent twice"):
        parse_client_hello(dtls_hello(extensions=alpn("a") + alpn("b")))


REAL = [openssl_hello(versions=TLS13, alpn=["mqtt", "h2"]), openssl_hello(),
        dtls_hello(extensions=versions(0xFEFC, 0xFEFD) + alpn("coap"))]


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(REAL), st.integers(0, 600), st.integers(0, 255), st.integers(0, 700))
def test_mutated_hellos_parse_or_fail_cleanly(base: bytes, at: int, value: int,
                                              cut: int) -> None:
    data = bytearray(base)
    if at < len(data):
        data[at] = value
    try:
        hello = parse_client_hello(bytes(data[:max(cut, 6)]))
    except ClientHelloError:
        return
    assert isinstance(hello, ClientHello)
    assert hello.cipher_suites is None or len(hello.cipher_suites) <= 512


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    for payload in (data, b"\x16\x03\x01" + data, b"\x16\xfe\xfd" + data):
        with contextlib.suppress(ClientHelloError):
            parse_client_hello(payload)
        transport_payload(payload)


def test_transport_payload_of_ipv4_tcp_and_ipv6_udp() -> None:
    tcp = bytes.fromhex("4500003c00004000400600000a0000020a000001") + \
        struct.pack("!HHIIBBHHH", 40000, 443, 0, 0, 0x50, 0x18, 0, 0, 0) + b"\x16hi"
    assert transport_payload(tcp) == (4, "10.0.0.2", "10.0.0.1", 6, 40000, 443, b"\x16hi")
    ip6 = bytes([0x60, 0, 0, 0, 0, 11, 17, 64]) + bytes(15) + b"\x02" + bytes(15) + b"\x01"
    udp = ip6 + struct.pack("!HHHH", 5000, 5684, 11, 0) + b"abc"
    assert transport_payload(udp) == (6, "::2", "::1", 17, 5000, 5684, b"abc")
    fragment = bytearray(tcp)
    fragment[6] = 0x20  # more fragments
    assert transport_payload(bytes(fragment)) is None


# -- the matcher --------------------------------------------------------------------------

PYTHON_TLS13 = parse_client_hello(openssl_hello(versions=TLS13, alpn=["mqtt"]))
FITS = TlsProfile(name="device", tls_versions=("tls13",),
                  cipher_suites=tuple(PYTHON_TLS13.cipher_suites or ()),
                  extension_types=tuple(PYTHON_TLS13.extension_types or ()),
                  supported_groups=tuple(PYTHON_TLS13.supported_groups or ()),
                  signature_algorithms=tuple(PYTHON_TLS13.signature_algorithms or ()),
                  application_protocols=("mqtt",), psk_key_exchange_modes=(1,))


def test_the_device_own_hello_fits() -> None:
    verdict = check_hello(PYTHON_TLS13, [FITS])
    assert verdict.fits and verdict.reason == "" and verdict.profile == "device"


@pytest.mark.parametrize(("hello", "reason"), [
    (parse_client_hello(openssl_hello(versions=TLS10, ciphers="DEFAULT:@SECLEVEL=0")),
     "offered TLS 1.0"),
    (parse_client_hello(openssl_hello(versions=TLS13, alpn=["h2"])), "ALPN h2 instead of mqtt"),
    (parse_client_hello(openssl_hello(versions=(ssl.TLSVersion.TLSv1_2,
                                                ssl.TLSVersion.TLSv1_3), alpn=["mqtt"])),
     "offered TLS 1.2"),
    (parse_client_hello(dtls_hello(extensions=versions(0xFEFC))),
     "DTLS where its profile states TLS only"),
])
def test_a_different_stack_deviates(hello: ClientHello, reason: str) -> None:
    verdict = check_hello(hello, [FITS])
    assert not verdict.fits
    assert reason in verdict.reason, verdict.reason


def test_a_cipher_outside_the_profile_is_named_in_hex() -> None:
    narrow = TlsProfile(name="n", cipher_suites=(0x1301,))
    hello = parse_client_hello(openssl_hello(versions=TLS10, ciphers="DEFAULT:@SECLEVEL=0"))
    verdict = check_hello(hello, [narrow])
    assert verdict.deviations[0].kind == "cipher"
    assert "cipher suite 0xc00a" in verdict.reason  # 0x00ff (SCSV) is never named
    assert "0x00ff" not in verdict.reason


def test_grease_and_unknown_extensions_are_ignored() -> None:
    grease = dtls_hello(suites=(0x1A1A, 0xC0AE), extensions=ext(0x2A2A, b"") +
                        ext(0x7777, b"x") + versions(0x3A3A, 0xFEFC))
    profile = TlsProfile(name="g", dtls_versions=("dtls13",), cipher_suites=(0xC0AE,),
                         extension_types=(43,))
    assert check_hello(parse_client_hello(grease), [profile]).fits


def test_one_fitting_profile_of_several_is_enough_and_the_nearest_is_reported() -> None:
    other = TlsProfile(name="other", tls_versions=("tls12",), application_protocols=("x",))
    assert check_hello(PYTHON_TLS13, [other, FITS]).profile == "device"
    h2 = parse_client_hello(openssl_hello(versions=TLS13, alpn=["h2"]))
    assert check_hello(h2, [other, FITS]).profile == "device"  # one deviation, not two


def test_an_unstated_parameter_is_not_checked() -> None:
    assert check_hello(PYTHON_TLS13, [TlsProfile(name="any")]).fits


def test_judge_picks_the_ace_by_protocol_and_port() -> None:
    mud = parse_mud(json.loads(EXAMPLE.read_text())).mud
    assert mud is not None
    assert [a.name for a in profiled_aces(mud, 6, 443)] == ["cl0-frdev"]
    assert [a.name for a in profiled_aces(mud, 17, 5684)] == ["cl1-frdev"]
    assert profiled_aces(mud, 6, 8443) == ()
    assert profiled_aces(mud, 6, 443, family=4) == ()  # the example's ACL is IPv6
    seen = TlsObservation(device_id="0" * 12, family=6, src="2001:db8::2",
                          dst="2001:db8::1", protocol=6, src_port=40000, dst_port=443,
                          hello=parse_client_hello(openssl_hello(versions=TLS10,
                                                                 ciphers="DEFAULT")))
    outcome = judge(seen, mud)
    assert outcome.deviates and outcome.ace == "mud-7500-profile/cl0-frdev"
    assert "offered TLS 1.0" in outcome.reason
    assert outcome.as_dict()["deviations"]
    plain = TlsObservation(device_id="0" * 12, family=6, src="2001:db8::2", dst="2001:db8::1",
                           protocol=6, src_port=40000, dst_port=443, hello=None,
                           problem="not a TLS handshake record")
    assert judge(plain, mud).reason == "not a TLS ClientHello (not a TLS handshake record)"
    elsewhere = TlsObservation(device_id="0" * 12, family=6, src="::2", dst="::1",
                               protocol=6, src_port=1, dst_port=8443, hello=None)
    assert judge(elsewhere, mud).verdict is None and not judge(elsewhere, mud).deviates
