"""RFC 9472 documents fetched over the hardened fetcher (a real HTTPS server on loopback).

The device-side fetch (``sbom-local-well-known``) needs a device on a LAN: its real
packets are in tests/netns/test_sbom_local.py; here only its refusals made before any
packet is sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from mudguard.mud.fetch import (
    FetchConfig,
    FetchError,
    fetch_local_sbom,
    fetch_transparency_bytes,
)
from tests.pki import make_cert
from tests.unit.test_mud_fetch import NAME, Handler, Server, config, serve

SBOM = b'{"spdxVersion": "SPDX-2.3", "name": "modelX"}'
CSAF = b'{"document": {"category": "csaf_vex"}}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The MUD tests' HTTPS server, with an SBOM and a CSAF document added to its routes."""
    original = Handler.do_GET

    def do_get(handler: Any) -> None:
        Handler.seen.append({"path": handler.path, "host": handler.headers.get("Host", ""),
                             "accept": handler.headers.get("Accept", "")})
        if handler.path == "/sbom-to-lan":
            handler._send(302, b"", "text/plain",
                          {"Location": "https://192.168.1.20/.well-known/sbom"})
        elif handler.path == "/sbom.spdx.json":
            handler._send(200, SBOM, "application/spdx+json")
        elif handler.path == "/csaf.json":
            handler._send(200, CSAF, "application/json")
        else:
            original(handler)

    ca = make_cert("transparency test CA", ca=True)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    cert = make_cert(NAME, issuer=ca, dns=(NAME,), ips=("127.0.0.1",))
    Handler.do_GET = do_get  # type: ignore[method-assign]
    try:
        for running in serve(cert, tmp_path_factory.mktemp("srv")):
            yield Server(port=running.server_address[1], ca_file=ca_file)
    finally:
        Handler.do_GET = original  # type: ignore[method-assign]


def test_a_cloud_sbom_and_a_vulnerability_document_are_fetched(server: Server) -> None:
    Handler.seen.clear()
    assert fetch_transparency_bytes(server.url("/sbom.spdx.json"), config=config(server)) == SBOM
    assert fetch_transparency_bytes(server.url("/csaf.json"), config=config(server)) == CSAF
    assert "application/spdx+json" in Handler.seen[0]["accept"]


def test_a_cloud_url_into_the_lan_is_refused_before_any_packet() -> None:
    with pytest.raises(FetchError) as caught:
        fetch_transparency_bytes("https://192.168.1.20/sbom.json")
    assert caught.value.key == "blocked_address"


def test_a_cloud_redirect_into_the_lan_is_refused(server: Server) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_transparency_bytes(server.url("/sbom-to-lan"), config=config(server))
    assert caught.value.key == "blocked_address"
    assert "192.168.1.20" in caught.value.reason


def test_a_cloud_sbom_must_be_https() -> None:
    with pytest.raises(FetchError) as caught:
        fetch_transparency_bytes(f"http://{NAME}/sbom.json")
    assert caught.value.key == "not_https"


def test_a_page_is_not_an_sbom(server: Server) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_transparency_bytes(server.url("/page.html"), config=config(server))
    assert caught.value.key == "content_type"


@pytest.mark.parametrize("scheme", ["coap", "coaps", "ftp"])
def test_the_device_is_asked_over_http_or_https_only(scheme: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_local_sbom(ipaddress.ip_address("192.0.2.10"), scheme)
    assert caught.value.key == "unsupported_scheme"


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "224.0.0.1", "0.0.0.0",
                                     "169.254.1.1"])
def test_an_address_that_is_no_device_is_refused(address: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_local_sbom(ipaddress.ip_address(address), "https")
    assert caught.value.key == "blocked_address"


def test_the_gateway_itself_is_no_device() -> None:
    def gateway(address: Any) -> str | None:
        return f"{address} is the gateway itself"

    with pytest.raises(FetchError) as caught:
        fetch_local_sbom(ipaddress.ip_address("192.0.2.1"), "https",
                         config=FetchConfig(gateway_check=gateway))
    assert caught.value.key == "blocked_address"
    assert "gateway itself" in caught.value.reason
