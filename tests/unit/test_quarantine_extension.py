"""Quarantine with exceptions (draft-richardson-shg-mud-quarantined-access-02, module
``ietf-mud-quarantine``): parsing the ``quaranteed-device-policy`` container, what
``decide`` keeps for a quarantined device, and the owner's per-device exceptions through
the service, the control requests, the CLI and the store."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.devices import CachedMud, EventKind
from mudguard.devices.requests import RequestError, handle_request
from mudguard.devices.service import DeviceService, QuarantineExceptionError
from mudguard.mud import MudFile, parse_mud
from mudguard.mud._model import QUARANTINE_MEMBER
from mudguard.policy import DeviceFacts, HomeContext, LifecycleState, PeerKind, decide
from mudguard.store import Store

EXAMPLE = Path(__file__).parents[1] / "data" / "mud-extensions" / "quarantine-enabled-aces.json"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CTX = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",))
MAC = "02:00:5e:00:53:31"


def example() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXAMPLE.read_bytes())
    return doc


def parsed(doc: dict[str, Any]) -> tuple[MudFile | None, list[str], list[str]]:
    result = parse_mud(json.dumps(doc).encode())
    return (result.mud, [f.message for f in result.warnings],
            [f.message for f in result.errors])


def with_enabled(entries: object) -> dict[str, Any]:
    doc = example()
    doc["ietf-mud:mud"][QUARANTINE_MEMBER] = {"enabled-ace-names": entries}
    return doc


# -- parsing -----------------------------------------------------------------------------

def test_the_corpus_example_parses_with_no_finding() -> None:
    mud, warnings, errors = parsed(example())
    assert mud is not None and mud.quarantine_ace_names == ("update0-frdev",)
    assert (warnings, errors) == ([], [])


def test_a_file_without_the_extension_has_none() -> None:
    doc = example()
    del doc["ietf-mud:mud"][QUARANTINE_MEMBER]
    doc["ietf-mud:mud"]["extensions"] = []
    mud, _, errors = parsed(doc)
    assert mud is not None and mud.quarantine_ace_names is None and not errors


def test_an_unknown_ace_name_is_a_warning_and_enables_nothing() -> None:
    mud, warnings, errors = parsed(with_enabled([{"ace-name": "update0-frdev"},
                                                 {"ace-name": "telnet-frdev"}]))
    assert mud is not None and mud.quarantine_ace_names == ("update0-frdev",)
    assert not errors and any("telnet-frdev" in w and "enables nothing" in w
                              for w in warnings)
    only_unknown, _, _ = parsed(with_enabled([{"ace-name": "telnet-frdev"}]))
    assert only_unknown is not None and only_unknown.quarantine_ace_names == ()


def test_a_bare_name_is_read_with_a_warning() -> None:
    mud, warnings, errors = parsed(with_enabled(["update0-frdev", "update0-frdev"]))
    assert mud is not None and mud.quarantine_ace_names == ("update0-frdev",)
    assert not errors and any("ace-name" in w for w in warnings)


@pytest.mark.parametrize(("container", "complaint"), [
    ("yes", "expected an object"),
    ({"enabled-ace-names": "update0-frdev"}, "expected a list"),
    ({"enabled-ace-names": [{"name": "update0-frdev"}]}, "missing"),
    ({"enabled-ace-names": [{"ace-name": 7}]}, "expected a string"),
])
def test_a_malformed_container_is_an_error(container: object, complaint: str) -> None:
    doc = example()
    doc["ietf-mud:mud"][QUARANTINE_MEMBER] = container
    _, _, errors = parsed(doc)
    assert any(complaint in e for e in errors), errors


def test_the_container_survives_normalisation() -> None:
    mud, _, _ = parsed(example())
    assert mud is not None
    again = parse_mud(json.dumps(mud.to_json()).encode())
    assert again.mud is not None and again.mud.quarantine_ace_names == ("update0-frdev",)
    assert mud.to_json()["ietf-mud:mud"][QUARANTINE_MEMBER] == {  # type: ignore[index]
        "enabled-ace-names": [{"ace-name": "update0-frdev"}]}


# -- decide --------------------------------------------------------------------------------

def quarantined(mud: MudFile, exceptions: tuple[str, ...] = ()) -> set[str | None]:
    facts = DeviceFacts(mac=MAC, ipv4=("192.0.2.31",), mud_url=mud.mud_url,
                        state=LifecycleState.QUARANTINED, quarantine_exceptions=exceptions)
    policy = decide(facts, mud, (), CTX, now=NOW)
    return {r.peer_value for r in policy.rules if r.peer is PeerKind.DNSNAME}


def test_quarantine_keeps_exactly_the_enabled_aces_not_the_makers_domain() -> None:
    mud, _, _ = parsed(example())
    assert mud is not None
    assert quarantined(mud) == {"firmware.cdn.example.net"}  # v4 and v6 ACEs alike
    facts = DeviceFacts(mac=MAC, mud_url=mud.mud_url, state=LifecycleState.QUARANTINED)
    reasons = decide(facts, mud, (), CTX, now=NOW).reasons
    assert "update0-frdev" in reasons[0]


def test_without_the_extension_the_makers_domain_heuristic_stays() -> None:
    doc = example()
    del doc["ietf-mud:mud"][QUARANTINE_MEMBER]
    mud, _, _ = parsed(doc)
    assert mud is not None
    assert quarantined(mud) == {"cloud.thermostat.example.com"}


def test_owner_exceptions_add_aces_in_both_cases() -> None:
    mud, _, _ = parsed(example())
    assert mud is not None
    assert quarantined(mud, ("ntp0-frdev",)) == {"firmware.cdn.example.net", "pool.ntp.org"}
    doc = copy.deepcopy(example())
    del doc["ietf-mud:mud"][QUARANTINE_MEMBER]
    plain, _, _ = parsed(doc)
    assert plain is not None
    assert quarantined(plain, ("ntp0-frdev",)) == {"cloud.thermostat.example.com",
                                                   "pool.ntp.org"}


def test_an_extension_naming_no_ace_never_widens() -> None:
    mud, _, _ = parsed(with_enabled([{"ace-name": "telnet-frdev"}]))
    assert mud is not None and quarantined(mud) == set()  # not the heuristic's cloud


# -- the owner's exceptions ----------------------------------------------------------------

@pytest.fixture
def svc(tmp_path: Path) -> Any:
    store = Store(tmp_path / "m.db")
    service = DeviceService(store=store)
    data = EXAMPLE.read_bytes()
    url = json.loads(data)["ietf-mud:mud"]["mud-url"]
    store.put_mud(CachedMud(url=url, data=data, fetched_at=service.clock(),
                            cache_validity_hours=48))
    service.observe(mac=MAC, ip="192.0.2.31", mud_url=url)
    yield service
    store.close()


def test_an_exception_is_added_stored_and_removed(svc: DeviceService) -> None:
    svc.quarantine(MAC, "tests")
    d = svc.quarantine_exception(MAC, "ntp0-frdev", add=True)
    assert d.quarantine_exceptions == ("ntp0-frdev",)
    assert svc.store.get_device(MAC) == d  # kept across a restart
    event = svc.store.list_events(MAC)[-1]
    assert event.kind is EventKind.QUARANTINE_EXCEPTION and event.details["action"] == "added"
    assert svc.quarantine_exception(MAC, "ntp0-frdev", add=False).quarantine_exceptions == ()


@pytest.mark.parametrize(("name", "add", "complaint"), [
    ("telnet-frdev", True, "no ACE"),
    ("ntp0-frdev", False, "is not a quarantine exception"),
])
def test_a_bad_exception_changes_nothing(svc: DeviceService, name: str, add: bool,
                                         complaint: str) -> None:
    before = svc.device(MAC)
    with pytest.raises(QuarantineExceptionError, match=complaint):
        svc.quarantine_exception(MAC, name, add=add)
    assert svc.device(MAC) == before


def test_the_control_request_checks_its_fields(svc: DeviceService) -> None:
    reply = handle_request(svc, {"op": "quarantine-exception", "mac": MAC, "action": "add",
                                 "ace": "ntp0-frdev"})
    assert reply["device"]["quarantine_exceptions"] == ["ntp0-frdev"]
    for bad in ({"action": "open", "ace": "ntp0-frdev"}, {"action": "add", "ace": "x" * 65},
                {"action": "add"}):
        with pytest.raises(RequestError):
            handle_request(svc, {"op": "quarantine-exception", "mac": MAC, **bad})


def test_the_cli_command(svc: DeviceService, tmp_path: Path) -> None:
    svc.store.close()
    db = tmp_path / "m.db"
    result = CliRunner().invoke(app, ["device", "quarantine-exception", MAC, "add",
                                      "ntp0-frdev", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "ntp0-frdev" in result.output
    bad = CliRunner().invoke(app, ["device", "quarantine-exception", MAC, "add",
                                   "telnet-frdev", "--db", str(db)])
    assert bad.exit_code == 1 and "no ACE" in bad.output
