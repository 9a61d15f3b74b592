"""Learn, then lock, as the owner sees it: the learning period and the proposal in words.

Theory of operation: ``learning_view`` is pure. From a device's learning record
(``devices.Learning``: period, recorded flows, the learned MUD file once made) it
says how long learning has run and has left, and, for a proposal, what the device
would be allowed once locked: the same ``describe_allowance`` grouping the device
page uses (maker's cloud, time servers, other online services, devices at home),
plus one plain sentence ("It talks to its maker's cloud at tplinkcloud.com, to time
servers and to the TP-Link Kasa app on your phone."). The proposal's policy is the
PROFILED state's rules for the learned file (``PortalServices.profile_policy``), so
what the owner reads is what locking enforces.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from mudguard.devices import Device
from mudguard.devices._model import Learning
from mudguard.mud import Direction, Forwarding, MudFile, parse_mud
from mudguard.policy import DevicePolicy, LifecycleState, PeerKind, Rule
from mudguard.portal._allowance import (
    Allowance,
    Translate,
    _is_maker,
    _maker_hints,
    _port,
    describe_allowance,
    display_domain,
    technical_line,
)

# Local services an owner knows by the app on their phone (the proposal's sentence).
PHONE_APPS = {(6, 9999): "TP-Link Kasa", (17, 9999): "TP-Link Kasa", (17, 56700): "LIFX",
              (6, 8008): "Google Home", (6, 8009): "Google Home", (6, 55443): "Yeelight",
              (17, 38899): "WiZ", (6, 6668): "Tuya", (17, 6667): "Tuya", (17, 6666): "Tuya"}
MAX_NAMED = 3  # domains named in the sentence; the groups below list the rest


@dataclass(frozen=True, slots=True, kw_only=True)
class LearningView:
    """A device's learning, for the page and the API."""

    state: LifecycleState
    started: datetime
    until: datetime
    ends_in_hours: float  # 0 once the period is over
    days: float  # how long it has been learned so far
    flows: int  # distinct connections recorded
    dropped: int  # distinct connections past the bound, not kept
    proposal: MudFile | None
    proposal_text: str | None  # the learned MUD file as JSON text
    allowance: Allowance | None
    sentence: str | None

    def left_text(self, t: Translate) -> str:
        """"2 days left", "5 hours left", "ending now"."""
        if self.ends_in_hours <= 0:
            return t("learn.left.now")
        if self.ends_in_hours >= 36:
            return t("learn.left.days", days=math.ceil(self.ends_in_hours / 24))
        return t("learn.left.hours", hours=max(1, math.ceil(self.ends_in_hours)))

    def span_text(self, t: Translate) -> str:
        """How long it was learned: "2.5 days", "5 hours"."""
        if self.days >= 1:
            return t("learn.span.days", days=f"{self.days:.1f}")
        return t("learn.span.hours", hours=max(1, math.ceil(self.days * 24)))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the API's ``learning``), without the words."""
        return {"state": self.state.value, "started": self.started.isoformat(),
                "until": self.until.isoformat(),
                "ends_in_seconds": round(self.ends_in_hours * 3600),
                "days": round(self.days, 2), "flows": self.flows, "dropped": self.dropped}


def learning_view(device: Device, record: Learning | None, *, now: datetime,
                  t: Translate, policy_of: Callable[[MudFile, str], DevicePolicy],
                  controllers: Collection[str] = ()) -> LearningView | None:
    """The device's learning in words, or None when it has no learning record.

    ``policy_of(mud, mac)`` gives the rules a profile would enforce once locked
    (``PortalServices.profile_policy``).
    """
    if record is None:
        return None
    mud = parse_mud(record.proposal).mud if record.proposal else None
    allowance = sentence = None
    if mud is not None:
        policy = policy_of(mud, device.mac)
        # The learner names the gateway's DNS/DHCP/NTP "my-controller"; the gateway's
        # basics already grant them, so the words leave them to "The gateway".
        shown = replace(policy, rules=tuple(
            r for r in policy.rules
            if not (r.peer is PeerKind.MY_CONTROLLER and _gateway_service(r))))
        allowance = replace(describe_allowance(shown, t, controllers),
                            technical=tuple(technical_line(r) for r in policy.rules))
        sentence = proposal_sentence(policy, t, controllers)
    text = None
    if record.proposal is not None:
        try:
            text = json.dumps(json.loads(record.proposal), indent=2, ensure_ascii=False)
        except ValueError:
            text = None
    left = (record.until - now).total_seconds() / 3600
    # Learned until the proposal was made (its last-update), else until now.
    ended = mud.last_update if mud is not None else min(now, record.until)
    return LearningView(state=device.state, started=record.started, until=record.until,
                        ends_in_hours=max(0.0, left),
                        days=max(0.0, (ended - record.started).total_seconds() / 86400),
                        flows=len(record.flows), dropped=record.dropped, proposal=mud,
                        proposal_text=text, allowance=allowance, sentence=sentence)


def proposal_sentence(policy: DevicePolicy, t: Translate,
                      controllers: Collection[str] = ()) -> str:
    """One sentence for what the learned profile lets the device do (pure)."""
    maker_hints = _maker_hints(policy)
    maker: set[str] = set()
    online: set[str] = set()
    addresses: set[str] = set()
    time = home = internet = False
    apps: list[str] = []
    for rule in policy.rules:
        if rule.action is not Forwarding.ACCEPT or rule.origin.startswith("baseline/"):
            continue
        if rule.peer is PeerKind.CONTROLLER and rule.peer_value not in controllers:
            continue
        answer = rule.dst_port is None and rule.src_port is not None
        if rule.direction is Direction.FROM_DEVICE:
            if answer and _from_home(rule):
                continue  # its answers to someone at home: said by the inbound rule
            if rule.peer is PeerKind.DNSNAME and rule.peer_value:
                domain = display_domain(rule.peer_value)
                if (rule.protocol, _port(rule.dst_port)) == (17, 123):
                    time = True
                elif _is_maker(domain, maker_hints):
                    maker.add(domain)
                else:
                    online.add(domain)
            elif rule.peer is PeerKind.NETWORK and rule.peer_value:
                kind = _network_kind(rule.peer_value)
                if kind == "address":
                    if (rule.protocol, _port(rule.dst_port)) == (17, 123):
                        time = True
                    else:
                        addresses.add(rule.peer_value)
                elif kind == "home":
                    home = True
                elif kind == "internet":
                    internet = True
            elif rule.peer in (PeerKind.ANY, PeerKind.INTERNET):
                internet = rule.ethertype is None or internet
            elif rule.peer is PeerKind.MY_CONTROLLER and _gateway_service(rule):
                continue  # the learner names the gateway's DNS/DHCP/NTP "my-controller"
            elif rule.peer is not PeerKind.GATEWAY:
                home = True
        elif rule.initiated is not Direction.FROM_DEVICE and _from_home(rule) and not answer:
            app = _app(rule)
            if app and app not in apps:
                apps.append(app)
            elif not app:
                home = True
    parts = []
    if maker:
        parts.append(t("learn.to.maker", domains=_names(maker, t)))
    if time:
        parts.append(t("learn.to.time"))
    if online:
        parts.append(t("learn.to.online", domains=_names(online, t)))
    if addresses:
        parts.append(t("learn.to.addresses", count=len(addresses)))
    parts += [t("learn.to.app", app=app) for app in apps]
    if home:
        parts.append(t("learn.to.home"))
    if internet:
        parts.append(t("learn.to.internet"))
    if not parts:
        return t("learn.sentence.nothing")
    return t("learn.sentence", parts=_and(parts, t))


# Where a home network's own addresses are (the documentation ranges are not: they
# stand for Internet addresses in tests and examples).
HOME_RANGES = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))
GATEWAY_SERVICES = frozenset({(17, 53), (6, 53), (17, 67), (17, 123), (17, 547)})


def _gateway_service(rule: Rule) -> bool:
    """A rule for the gateway's DNS, DHCP or NTP (either side's port)."""
    return any((rule.protocol or 0, _port(port) or 0) in GATEWAY_SERVICES
               for port in (rule.dst_port, rule.src_port))


def _network_kind(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "internet"
    if network.is_multicast or network.is_link_local or any(
            network.version == home.version and network.subnet_of(home)  # type: ignore[arg-type]
            for home in HOME_RANGES) or \
            network.network_address == ipaddress.IPv4Address("255.255.255.255"):
        return "home"
    return "address" if network.num_addresses == 1 else "internet"


def _from_home(rule: Rule) -> bool:
    """A rule letting someone at home open a connection to the device."""
    if rule.peer in (PeerKind.LOCAL_NETWORKS, PeerKind.MY_CONTROLLER, PeerKind.CONTROLLER,
                     PeerKind.SAME_MANUFACTURER, PeerKind.MANUFACTURER, PeerKind.MODEL):
        return True
    return rule.peer is PeerKind.NETWORK and bool(rule.peer_value) and \
        _network_kind(rule.peer_value or "") == "home"


def _app(rule: Rule) -> str:
    port = _port(rule.dst_port)
    return PHONE_APPS.get((rule.protocol or 0, port or 0), "")


def _names(domains: set[str], t: Translate) -> str:
    ordered = sorted(domains)
    shown = ordered[:MAX_NAMED]
    if len(ordered) > MAX_NAMED:
        shown.append(t("learn.more", count=len(ordered) - MAX_NAMED))
    return _and(shown, t)


def _and(parts: list[str], t: Translate) -> str:
    if len(parts) == 1:
        return parts[0]
    return t("allow.list_separator").join(parts[:-1]) + t("learn.and") + parts[-1]
