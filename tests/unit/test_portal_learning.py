"""Learn, then lock, in the owner's portal (issue #16): the learning period on the device
page, the proposal in plain words, "Lock it to this" / "Keep the home default" / "Learn
again" as forms (CSRF) and through the JSON API, in English and French; the device's kind."""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from mudguard.devices import Device, MudSource, learning
from mudguard.devices import SignatureStatus as Sig
from mudguard.mud import parse_mud
from mudguard.policy import LifecycleState as S
from mudguard.portal._i18n import translate
from mudguard.portal._learning import proposal_sentence
from tests.unit.test_portal_support import OWNER, PASSWORD, Stack, page_csrf, portal, text_of

MAC = "50:c7:bf:00:53:07"  # a TP-Link OUI
IP = "192.168.1.20"
PHONE = "192.168.1.30"
NAMES = {"203.0.113.10": "devs.tplinkcloud.com", "203.0.113.11": "use1-api.tplinkra.com",
         "198.51.100.5": "pool.ntp.org"}


def _flows(device: Device) -> list[learning.FlowRecord]:
    """A smart plug's day: its maker's cloud, a time server, the app on the phone."""
    wanted = [(IP, "203.0.113.10", 6, 443), (IP, "203.0.113.11", 6, 443),
              (IP, "198.51.100.5", 17, 123), (IP, "192.168.1.1", 17, 53),
              (PHONE, IP, 6, 9999)]
    out = [learning.flow_record(device, family=4, src=src, dst=dst, protocol=protocol,
                                dst_port=port, name_of=NAMES.get)
           for src, dst, protocol, port in wanted]
    return [r for r in out if r is not None]


@contextmanager
def learning_portal(tmp_path: Path) -> Iterator[tuple[TestClient, Stack, Device]]:
    """The portal, with a plug that announced no MUD URL being learned."""
    with portal(tmp_path) as (client, st, _):
        devices = st.services.devices
        devices.learns = True
        devices.lan_prefixes = ("192.168.1.0/24",)
        devices.gateway_ips = ("192.168.1.1",)
        device = devices.observe(mac=MAC, ip=IP, hostname="HS110", manufacturer="TP-Link",
                                 kind="plug")
        assert device.state is S.LEARNING
        assert devices.record_flows(MAC, _flows(device)) == 5
        yield client, st, device


def _words(page: str) -> str:
    """The page's visible words, entities decoded."""
    return html.unescape(text_of(page))


def _api_login(client: TestClient) -> dict[str, str]:
    login = client.post("/api/session", json={"username": OWNER, "password": PASSWORD})
    assert login.status_code == 200
    return {"X-CSRF-Token": login.json()["csrf_token"]}


def test_the_device_page_shows_learning_then_the_proposal_and_locks_it(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        page = client.get(f"/devices/{MAC}")
        words = _words(page.text)
        assert "Learning since" in words and "3 days left" in words, words[:800]
        assert "5 different connections recorded so far" in words
        assert "Kind smart plug" in words  # what identify said, stored on the device
        assert f'action="/devices/{MAC}/learning/end"' in page.text
        assert "Lock it to this" not in words  # nothing to lock before the proposal
        token = page_csrf(client, f"/devices/{MAC}")
        ended = client.post(f"/devices/{MAC}/learning/end", data={"csrf": token})
        assert ended.status_code == 200 and ended.url.path == f"/devices/{MAC}"
        assert st.store.get_device(MAC).state is S.PROPOSED
        words = _words(ended.text)
        assert ("It talks to its maker's cloud at tplinkcloud.com and tplinkra.com, to time "
                "servers and to the TP-Link Kasa app on your phone.") in words, words[-3000:]
        assert "Its maker's cloud" in words and "time servers (pool.ntp.org)" in words
        assert "Learned over 1 hour(s) from 5 different connections." in words
        # The learner's "my-controller" for the gateway's DNS is the gateway's basics.
        assert "the controller you assign to it" not in words
        assert "my-controller" in words  # still in the technical fold
        assert "Lock it to this" in words and "Keep the home default" in words
        # Still the home default until the owner decides.
        assert st.store.get_device(MAC).profile_hash is None
        locked = client.post(f"/devices/{MAC}/learning/lock", data={"csrf": token})
        assert locked.status_code == 200
        device = st.store.get_device(MAC)
        assert (device.state, device.mud_source, device.signature_status) == (
            S.PROFILED, MudSource.LEARNED, Sig.OWNER_APPROVED)
        assert st.store.get_learning(MAC) is None
        words = _words(locked.text)
        assert "Lock it to this" not in words and "devs.tplinkcloud.com" in words


def test_keep_the_default_then_learn_again(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        token = page_csrf(client, f"/devices/{MAC}")
        client.post(f"/devices/{MAC}/learning/end", data={"csrf": token})
        kept = client.post(f"/devices/{MAC}/learning/keep-default", data={"csrf": token})
        assert st.store.get_device(MAC).state is S.DEFAULT
        assert st.store.get_learning(MAC) is None
        assert "Learn again" in _words(kept.text)
        again = client.post(f"/devices/{MAC}/learning/start", data={"csrf": token})
        assert st.store.get_device(MAC).state is S.LEARNING
        assert "Learning since" in _words(again.text)


def test_learning_forms_need_the_sessions_csrf_token(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        for action in ("end", "lock", "keep-default"):
            refused = client.post(f"/devices/{MAC}/learning/{action}", data={"csrf": "forged"})
            assert refused.status_code == 403, action
        assert st.store.get_device(MAC).state is S.LEARNING
        token = page_csrf(client, f"/devices/{MAC}")
        unknown = client.post(f"/devices/{MAC}/learning/grant-everything", data={"csrf": token})
        assert unknown.status_code == 400
        assert st.store.get_device(MAC).state is S.LEARNING


def test_the_proposal_in_french(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        st.services.end_learning(MAC)
        words = _words(client.get(f"/devices/{MAC}?lang=fr").text)
        assert ("Il communique avec le cloud de son fabricant, tplinkcloud.com et tplinkra.com, "
                "avec des serveurs de temps et avec l’application TP-Link Kasa de votre "
                "téléphone.") in words, words[-3000:]
        assert "Le limiter à cela" in words and "Type prise connectée" in words


def test_the_learning_api(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        headers = _api_login(client)
        shown = client.get(f"/api/devices/{MAC}/learning").json()
        assert shown["device"]["state"] == "learning" and shown["device"]["kind"] == "plug"
        assert shown["learning"]["flows"] == 5 and shown["proposal"] is None
        assert 3 * 86400 - 60 <= shown["learning"]["ends_in_seconds"] <= 3 * 86400
        # The device's own record keeps its schema, with the kind added.
        assert client.get(f"/api/devices/{MAC}").json()["kind"] == "plug"
        refused = client.post(f"/api/devices/{MAC}/learning/end")
        assert refused.status_code == 403 and refused.json()["error"] == "bad_csrf"
        ended = client.post(f"/api/devices/{MAC}/learning/end", headers=headers).json()
        assert ended["device"]["state"] == "proposed"
        proposal = ended["proposal"]
        assert proposal["sentence"].startswith("It talks to its maker's cloud at tplinkcloud")
        assert "TP-Link Kasa app" in proposal["sentence"]
        assert {g["key"] for g in proposal["allowance"]["groups"]} >= {"maker", "time"}
        assert proposal["mud"]["ietf-mud:mud"]["mud-url"] == learning.learned_url(MAC)
        locked = client.post(f"/api/devices/{MAC}/learning/lock", headers=headers)
        assert locked.status_code == 200, locked.text
        assert locked.json()["device"]["mud_source"] == "learned"
        assert locked.json()["learning"] is None
        again = client.post(f"/api/devices/{MAC}/learning/lock", headers=headers)
        assert again.status_code == 409 and again.json()["error"] == "bad_transition"
        # Learning again sets the learned profile aside (the home default meanwhile).
        restart = client.post(f"/api/devices/{MAC}/learning/start", headers=headers)
        assert restart.status_code == 200, restart.text
        device = st.store.get_device(MAC)
        assert (device.state, device.mud_url, device.profile_hash) == (S.LEARNING, None, None)
        assert st.store.get_mud(learning.learned_url(MAC)) is None
        assert restart.json()["learning"]["flows"] == 0


def test_the_api_keeps_the_default(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        headers = _api_login(client)
        kept = client.post(f"/api/devices/{MAC}/learning/keep-default", headers=headers).json()
        assert kept["device"]["state"] == "default" and kept["learning"] is None
        started = client.post(f"/api/devices/{MAC}/learning/start", headers=headers).json()
        assert started["device"]["state"] == "learning" and started["learning"]["flows"] == 0
        assert st.store.get_learning(MAC) is not None


def test_the_time_left_is_in_hours_near_the_end(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        record = st.store.get_learning(MAC)
        st.store.start_learning(MAC, record.started - timedelta(days=2, hours=19),
                                record.until - timedelta(days=2, hours=19))
        words = _words(client.get(f"/devices/{MAC}").text)
        assert "5 hours left" in words, words[:800]


def _sentence(st: Stack, data: bytes, lang: str = "en") -> str:
    mud = parse_mud(data).mud
    assert mud is not None
    policy = st.services.profile_policy(mud, MAC)

    def t(key: str, **values: Any) -> str:
        return translate(lang, key, **values)
    return proposal_sentence(policy, t)


def test_the_sentence_names_what_the_profile_grants_and_nothing_else(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (_, st, device):
        record = st.store.get_learning(MAC)
        only_dns = learning.propose(
            record.__class__(mac=MAC, started=record.started, until=record.until,
                             flows=tuple(tuple(f) for f in _flows(device)[3:4])),
            device, now=st.services.now(), lan_prefixes=("192.168.1.0/24",),
            gateway_ips=("192.168.1.1",))
        assert only_dns is not None
        assert _sentence(st, only_dns) == "It needs nothing but the gateway's basics."
        unnamed = [[*f[:6], None] for f in _flows(device)[:1]]
        data = learning.propose(
            record.__class__(mac=MAC, started=record.started, until=record.until,
                             flows=tuple(tuple(f) for f in unnamed)),
            device, now=st.services.now(), lan_prefixes=("192.168.1.0/24",))
        assert data is not None
        assert _sentence(st, data) == "It talks to 1 Internet address(es) without a name."


def test_the_learned_span_stops_at_the_proposal(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        devices = st.services.devices
        started = devices.clock()
        devices.clock = lambda: started + timedelta(hours=36)
        st.services.end_learning(MAC)
        devices.clock = lambda: started + timedelta(days=9)  # the owner looks much later
        words = _words(client.get(f"/devices/{MAC}").text)
        assert "Learned over 1.5 days from 5 different connections." in words, words[:1500]
        shown = client.get(f"/api/devices/{MAC}/learning").json()
        assert shown["learning"]["days"] == 1.5 and shown["learning"]["ends_in_seconds"] == 0


def test_learn_again_is_offered_only_where_learning_records(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        headers = _api_login(client)
        st.services.keep_default(MAC)
        assert "Learn again" in _words(client.get(f"/devices/{MAC}").text)
        st.services.devices.learns = False  # a gateway without the conntrack recorder
        assert "Learn again" not in _words(client.get(f"/devices/{MAC}").text)
        refused = client.post(f"/api/devices/{MAC}/learning/start", headers=headers)
        assert refused.status_code == 409 and "learning is off" in refused.json()["message"]
        st.services.devices.learns = True
        st.store.save_settings(replace(st.store.get_settings(), learning_days=0))
        assert "Learn again" not in _words(client.get(f"/devices/{MAC}").text)
        assert client.post(f"/api/devices/{MAC}/learning/start",
                           headers=headers).status_code == 409
        assert st.store.get_device(MAC).state is S.DEFAULT


def test_a_makers_profile_is_never_set_aside_for_learning(tmp_path: Path) -> None:
    from tests.unit.test_portal_support import mud_document

    with learning_portal(tmp_path) as (client, st, _):
        url = st.server.url("/bulb.json")
        st.server.put_json("/bulb.json", mud_document(url))
        bulb = "00:11:22:33:44:55"
        st.services.onboard(url=url, mac=bulb)
        assert st.store.get_device(bulb).state is S.PROFILED
        assert "Learn again" not in _words(client.get(f"/devices/{bulb}").text)
        headers = _api_login(client)
        refused = client.post(f"/api/devices/{bulb}/learning/start", headers=headers)
        assert refused.status_code == 409, refused.text
        assert st.store.get_device(bulb).mud_url == url


def test_a_locked_device_offers_learn_again(tmp_path: Path) -> None:
    with learning_portal(tmp_path) as (client, st, _):
        st.services.lock_learned(MAC)
        words = _words(client.get(f"/devices/{MAC}").text)
        assert "Learn again" in words and "until you lock it again" in words
        token = page_csrf(client, f"/devices/{MAC}")
        client.post(f"/devices/{MAC}/learning/start", data={"csrf": token})
        assert st.store.get_device(MAC).state is S.LEARNING
