"""Acceptable MUD URL updates (draft-ietf-iotops-mud-acceptable-urls-00) enforced with real
packets: the device service with the real enforcer in a virtual home, really signed MUD
files checked by the daemon's verifier. A new URL under the same base signed by the
pinned signer is enforced at once; one signed by another signer changes nothing in the
kernel until the owner approves it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mudguard.app import signature_verifier
from mudguard.devices import CachedMud
from mudguard.devices.service import DeviceService
from mudguard.enforce.nft import NftError
from mudguard.mud.signature import sign_mud
from mudguard.store import Store
from tests.netns.test_enforce import CLOUD4, MFG4, OTHER4, Gateway, _gateway
from tests.pki import Issued, make_cert

pytestmark = pytest.mark.root

BASE = "https://mud.maker.example/lamp/"


@pytest.fixture
def gw() -> Iterator[Gateway]:
    yield from _gateway(f"mgau{os.getpid() % 1000}", 1)


def publish(svc: DeviceService, corpus: Path, url: str, cloud: str, signer: Issued) -> None:
    """The corpus cloud-service file at ``url``, talking to ``cloud``, signed."""
    text = (corpus / "mud/rfc/mudmaker-cloud-service.json").read_text()
    doc = json.loads(text.replace("cloud-service.example.com", cloud))
    doc["ietf-mud:mud"]["mud-url"] = url
    doc["ietf-mud:mud"]["mud-signature"] = url.removesuffix(".json") + ".p7s"
    data = json.dumps(doc).encode()
    svc.store.put_mud(CachedMud(url=url, data=data, fetched_at=svc.clock(),
                                signature=sign_mud(data, signer.key, signer.cert)))


def test_an_acceptable_update_is_enforced_and_another_signer_is_not(
        gw: Gateway, corpus: Path, tmp_path: Path) -> None:
    h, d0 = gw.home, gw.d[0]
    root = make_cert("maker root CA", ca=True)
    signer = make_cert("mud-signer.maker.example", issuer=root)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    with Store(tmp_path / "m.db") as store:
        svc = DeviceService(store=store, verify=signature_verifier(roots),
                            enforcer=gw.enforcer, clock=lambda: datetime.now(UTC))
        publish(svc, corpus, BASE + "v1.json", "cloud-v1.maker.example", signer)
        publish(svc, corpus, BASE + "v2.json", "cloud-v2.maker.example", signer)
        publish(svc, corpus, BASE + "v3.json", "tracker.example.net",
                make_cert("other-product-signer.maker.example", issuer=root))

        svc.observe(mac=d0.mac, ip=d0.ipv4, mud_url=BASE + "v1.json")
        gw.fill("cloud-v1.maker.example", d0, CLOUD4)
        assert h.tcp(d0.ns, CLOUD4, 443) and not h.tcp(d0.ns, MFG4, 443, 0.5)

        # Same base, same signer: enforced at once, without the owner.
        assert svc.observe(mac=d0.mac, mud_url=BASE + "v2.json").mud_url == BASE + "v2.json"
        gw.fill("cloud-v2.maker.example", d0, MFG4)
        assert h.tcp(d0.ns, MFG4, 443) and not h.tcp(d0.ns, CLOUD4, 443, 0.5)

        # Same base, another product's signer: held; the kernel keeps enforcing v2.
        held = svc.observe(mac=d0.mac, mud_url=BASE + "v3.json")
        assert held.pending_mud_url == BASE + "v3.json"
        with pytest.raises(NftError):  # the held file's name has no set in the kernel
            gw.fill("tracker.example.net", d0, OTHER4)
        assert not h.tcp(d0.ns, OTHER4, 443, 0.5) and h.tcp(d0.ns, MFG4, 443)
