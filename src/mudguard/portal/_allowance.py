"""What a device may do, in words a person uses, from its effective policy.

Theory of operation: ``describe_allowance(policy, t)`` is pure. It reads the rules
``decide()`` produced for the device's CURRENT state (quarantine, end of support, the
owner's grants included; the same rules the enforcer installs) and groups them by
purpose: the gateway's basics, its maker's cloud, time servers, other online services,
other devices at home, the Internet, who may connect to it, and what the owner blocked.
MUD jargon (controller URNs, address prefixes, ethertypes, rule names) appears only in
``technical``, the fold under the main view. Risky allowances are flagged in plain words.

``t(key, **values)`` is the page's translator (``_i18n.translate`` bound to a language);
every sentence comes from the catalogue, so both languages say the same thing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

from mudguard.mud import Direction, Forwarding, PortMatch, PortOperator
from mudguard.policy import DevicePolicy, LifecycleState, PeerKind, Rule, registrable_domain

Translate = Callable[..., str]

FROM, TO = Direction.FROM_DEVICE, Direction.TO_DEVICE
GROUPS = ("gateway", "maker", "time", "online", "home", "internet", "inbound", "blocked")

_WELL_KNOWN = {
    (6, 443): "HTTPS", (6, 80): "HTTP", (17, 53): "DNS", (6, 53): "DNS", (17, 123): "NTP",
    (17, 67): "DHCP", (17, 68): "DHCP", (17, 547): "DHCP", (17, 546): "DHCP",
    (6, 8883): "MQTT", (6, 1883): "MQTT", (17, 1900): "SSDP", (17, 5353): "mDNS",
    (6, 631): "IPP", (6, 9100): "printing", (6, 22): "SSH", (6, 23): "Telnet",
    (17, 443): "QUIC", (17, 3478): "STUN", (6, 554): "RTSP", (17, 5683): "CoAP",
}
# Local services people know by the app that uses them.
_HOME_APPS = {(17, 56700): "LIFX", (6, 56700): "LIFX", (6, 8008): "Google Cast",
              (6, 8009): "Google Cast", (17, 1900): "UPnP", (17, 5353): "Bonjour",
              (6, 9100): "printing", (6, 631): "printing"}
_DRAFT_CLASS_SERVICE = {"urn:ietf:params:mud:dns": "DNS", "urn:ietf:params:mud:dhcp": "DHCP",
                        "urn:ietf:params:mud:ntp": "NTP"}
_ETHERTYPES = {0x888E: "svc.eapol", 0x0806: "svc.arp", 0x88CC: "svc.lldp",
               0x0800: "svc.everything", 0x86DD: "svc.everything"}
_ND_TYPES = frozenset({133, 134, 135, 136})


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowanceGroup:
    """One purpose ("its maker's cloud") and its lines."""

    key: str
    title: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowance:
    """What a device may do now, in words; ``technical`` keeps the rule-level detail."""

    state: LifecycleState
    summary: str  # one sentence for the state ("Quarantined: only the gateway's basics")
    groups: tuple[AllowanceGroup, ...]
    risks: tuple[str, ...]
    technical: tuple[str, ...]

    def main_text(self) -> str:
        """Everything the main view shows (not the technical fold), as one text."""
        lines = [self.summary, *self.risks]
        for group in self.groups:
            lines.append(group.title)
            lines.extend(group.items)
        return "\n".join(lines)


@dataclass(slots=True)
class _Words:
    """Collected allowances, before they become sentences."""

    gateway: list[str]
    maker: dict[str, set[str]]  # registrable domain -> names
    time: list[str]
    online: dict[str, set[str]]
    addresses: dict[str, list[str]]  # a fixed Internet address -> services
    home: dict[tuple[str, str], list[str]]  # (message key, maker) -> services
    internet: dict[str, list[str]]  # message key -> services
    inbound: dict[tuple[str, str], list[str]]  # (message key, who) -> services
    blocked: list[str]
    risks: list[str]


def describe_allowance(policy: DevicePolicy, t: Translate,
                       controllers: Collection[str] = (), *,
                       my_controllers: bool = False) -> Allowance:
    """The device's effective policy in words, grouped by purpose (pure).

    ``controllers``: the controller classes the owner mapped to addresses (``[mud]
    controllers``); a rule naming another class grants nothing, so it is not listed.
    ``my_controllers``: whether the home assigns controllers to this device's MUD URL
    (RFC 8520 §8 "my-controller"); the daemon assigns none, so such rules grant nothing
    and are not listed either.
    """
    words = _Words([], {}, [], {}, {}, {}, {}, {}, [], [])
    maker = _maker_hints(policy)
    outgoing = {(r.peer, r.peer_value) for r in policy.rules
                if r.direction is FROM and r.action is Forwarding.ACCEPT}
    for rule in policy.rules:
        if rule.action is Forwarding.ACCEPT and (
                (rule.peer is PeerKind.CONTROLLER and rule.peer_value not in controllers)
                or (rule.peer is PeerKind.MY_CONTROLLER and not my_controllers)):
            continue  # an unmapped controller grants nothing
        if rule.action is not Forwarding.ACCEPT:
            _add_unique(words.blocked, _blocked(rule, t))
        elif rule.direction is FROM:
            _outgoing(rule, words, maker, t)
        elif rule.initiated is not FROM and not (
                rule.peer in (PeerKind.DNSNAME, PeerKind.NETWORK)
                and (rule.peer, rule.peer_value) in outgoing):
            _inbound(rule, words, t)  # a server it talks to answering is no news
    groups = _groups(words, t)
    summary = f"allow.state.{policy.state.value}"
    if any(r.origin == "grant/internet" for r in policy.rules) and policy.state in (
            LifecycleState.OUT_OF_SUPPORT, LifecycleState.DEFAULT):
        summary += ".internet"
    if policy.state is LifecycleState.QUARANTINED and any(
            not r.origin.startswith("baseline/") for r in policy.rules):
        summary += ".maker"  # the quarantine keeps the maker's own (update) servers
    return Allowance(state=policy.state, summary=t(summary),
                     groups=groups, risks=tuple(words.risks),
                     technical=tuple(technical_line(r) for r in policy.rules))


def _groups(words: _Words, t: Translate) -> tuple[AllowanceGroup, ...]:
    items: dict[str, list[str]] = {g: [] for g in GROUPS}
    if words.gateway:
        items["gateway"].append(t("allow.gateway", services=_join(words.gateway, t)))
    for domain, names in sorted(words.maker.items()):
        items["maker"].append(t("allow.maker_cloud", domain=domain, servers=_servers(names, t)))
    if words.time:
        items["time"].append(t("allow.time", names=_join(words.time, t)))
    for domain, names in sorted(words.online.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        items["online"].append(t("allow.online", domain=domain, servers=_servers(names, t)))
    for address, services in sorted(words.addresses.items()):
        items["online"].append(t("allow.address", address=address,
                                 services=_join(services, t)))
    for (key, maker), services in words.home.items():
        items["home"].append(t(key, maker=maker, services=_join(services, t)))
    for key, services in words.internet.items():
        items["internet"].append(t(key, services=_join(services, t)))
    for (key, who), services in words.inbound.items():
        items["inbound"].append(t(key, who=who, services=_join(services, t)))
    items["blocked"] = words.blocked
    return tuple(AllowanceGroup(key=g, title=t(f"allow.group.{g}"), items=tuple(items[g]))
                 for g in GROUPS if items[g])


_JOINING_ORIGINS = frozenset({"baseline/mld-report", "baseline/mldv1-report",
                               "baseline/mldv1-done", "baseline/igmp"})


def _outgoing(rule: Rule, words: _Words, maker: tuple[str, ...], t: Translate) -> None:
    service = service_words(rule, t)
    peer, value = rule.peer, rule.peer_value
    if peer is PeerKind.GATEWAY:
        if rule.origin in _JOINING_ORIGINS:
            return  # multicast group reports a device sends while joining: no news to an owner
        if value in _DRAFT_CLASS_SERVICE and rule.protocol is None:
            service = _DRAFT_CLASS_SERVICE[value]
        _add_unique(words.gateway, service)
    elif peer is PeerKind.DNSNAME and value:
        domain = display_domain(value)
        if (rule.protocol, _port(rule.dst_port)) == (17, 123):
            _add_unique(words.time, value)
        elif _is_maker(domain, maker):
            words.maker.setdefault(domain, set()).add(value)
        else:
            words.online.setdefault(domain, set()).add(value)
    elif peer is PeerKind.NETWORK and value:
        _network(rule, value, service, words, t)
    elif peer in (PeerKind.LOCAL_NETWORKS, PeerKind.SAME_MANUFACTURER, PeerKind.MANUFACTURER,
                  PeerKind.MODEL, PeerKind.MY_CONTROLLER, PeerKind.CONTROLLER):
        _add_to(words.home, (f"allow.home.{peer.value}", value or ""),
                _home_service(rule, t))
    elif rule.ethertype is not None and rule.protocol is None:
        _add_to(words.home, ("allow.home.local-networks", ""), service)
    else:  # ANY or INTERNET: the whole Internet
        key = "allow.internet.granted" if rule.origin.startswith("grant/") else \
            "allow.internet"
        _add_to(words.internet, key, service)
        _add_unique(words.risks, t("risk.outbound_anyone"))


def _network(rule: Rule, value: str, service: str, words: _Words, t: Translate) -> None:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        _add_to(words.internet, "allow.internet", service)
        return
    if network.is_multicast or network.network_address == ipaddress.IPv4Address(
            "255.255.255.255"):
        _add_to(words.home, ("allow.home.announce", ""), _home_service(rule, t))
    elif network.is_private or network.is_link_local:
        _add_to(words.home, ("allow.home.local-networks", ""), _home_service(rule, t))
    elif network.num_addresses == 1:
        _add_unique(words.addresses.setdefault(str(network.network_address), []), service)
    else:
        _add_to(words.internet, "allow.internet_range", service)


def _inbound(rule: Rule, words: _Words, t: Translate) -> None:
    service = service_words(rule, t)
    peer = rule.peer
    if peer is PeerKind.GATEWAY:
        return  # the gateway's answers (DHCP, DNS)
    if peer in (PeerKind.ANY, PeerKind.INTERNET) and rule.ethertype is None:
        _add_to(words.inbound, ("allow.in.anyone", ""), service)
        _add_unique(words.risks, t("risk.inbound_anyone"))
        return
    if peer is PeerKind.NETWORK and rule.peer_value:
        try:
            network = ipaddress.ip_network(rule.peer_value, strict=False)
        except ValueError:
            network = None
        if network is not None and network.is_global and not network.is_multicast:
            who = str(network.network_address) if network.num_addresses == 1 else \
                t("allow.who.range")
            _add_to(words.inbound, ("allow.in.from", who), service)
            return
    if peer is PeerKind.DNSNAME and rule.peer_value:
        who = display_domain(rule.peer_value)
        _add_to(words.inbound, ("allow.in.from", who), service)
        return
    _add_to(words.inbound, ("allow.in.home", ""), _home_service(rule, t))


def _blocked(rule: Rule, t: Translate) -> str:
    if rule.origin == "grant/pause":
        return t("allow.blocked", who=t("allow.who.paused"))
    if rule.peer_value and rule.peer in (PeerKind.DNSNAME, PeerKind.NETWORK):
        return t("allow.blocked", who=rule.peer_value)
    return t("allow.blocked", who=t("allow.who.anyone"))


def service_words(rule: Rule, t: Translate) -> str:
    """A rule's protocol and port as a person names them ("HTTPS", "UDP port 3478")."""
    protocol = rule.protocol
    if protocol is None and rule.ethertype is not None:
        return t(_ETHERTYPES.get(rule.ethertype, "svc.layer2"))
    if protocol in (6, 17):
        name = "TCP" if protocol == 6 else "UDP"
        port = rule.dst_port if rule.direction is FROM else rule.src_port
        if port is None:
            port = rule.src_port if rule.direction is FROM else rule.dst_port
        single = _port(port)
        if single is not None:
            return _WELL_KNOWN.get((protocol, single)) or t("svc.port", protocol=name,
                                                             port=single)
        bounds = _bounds(port)
        if bounds is not None:
            return t("svc.ports", protocol=name, low=bounds[0], high=bounds[1])
        return t("svc.any", protocol=name)
    if protocol in (1, 58):
        if rule.icmp_type in _ND_TYPES:
            return t("svc.nd")
        if rule.icmp_type in (0, 8, 128, 129):
            return t("svc.ping")
        return t("svc.icmp")
    if protocol == 2:
        return t("svc.igmp")
    if protocol is None:
        return t("svc.everything")
    return t("svc.other")


def _home_service(rule: Rule, t: Translate) -> str:
    """A local service named after the app that uses it when there is one ("LIFX")."""
    port = _port(rule.dst_port if rule.direction is FROM else rule.src_port) or \
        _port(rule.src_port if rule.direction is FROM else rule.dst_port)
    app = _HOME_APPS.get((rule.protocol or 0, port or 0))
    return t("svc.app", app=app) if app else service_words(rule, t)


def technical_line(rule: Rule) -> str:
    """One rule as the technical fold shows it (MUD terms, prefixes, ethertypes)."""
    parts = [rule.origin or "-", rule.direction.value, rule.action.value, rule.peer.value]
    if rule.peer_value:
        parts.append(rule.peer_value)
    if rule.family:
        parts.append(f"ipv{rule.family}")
    if rule.protocol is not None:
        parts.append(f"protocol {rule.protocol}")
    for label, port in (("src-port", rule.src_port), ("dst-port", rule.dst_port)):
        if port is not None:
            parts.append(f"{label} {port.describe()}")
    if rule.icmp_type is not None:
        parts.append(f"icmp-type {rule.icmp_type}")
    if rule.ethertype is not None:
        parts.append(f"ethertype 0x{rule.ethertype:04x}")
    if rule.initiated is not None:
        parts.append(f"initiated {rule.initiated.value}")
    return " ".join(parts)


@functools.cache
def _icann_suffixes() -> PublicSuffixList:
    """The ICANN section of the Public Suffix List: ``ajax.googleapis.com`` is shown under
    ``googleapis.com`` (display only; grants use ``registrable_domain``)."""
    return PublicSuffixList(only_icann=True)


@functools.lru_cache(maxsize=4096)
def display_domain(name: str) -> str:
    """The domain a DNS name is listed under ("tplinkcloud.com: 5 servers")."""
    domain: str | None = _icann_suffixes().privatesuffix(name.lower().rstrip("."))
    return domain or registrable_domain(name) or name


def _maker_hints(policy: DevicePolicy) -> tuple[str, ...]:
    """Lower-case, letters-only names of the maker: its MUD host's domain and its name."""
    hints: list[str] = []
    url = policy.device.mud_url or (policy.mud.mud_url if policy.mud else None)
    if url:
        domain = registrable_domain(urlsplit(url).hostname or "")
        if domain:
            hints.append(_letters(domain.split(".")[0]))
    if policy.mud is not None and policy.mud.mfg_name:
        hints.append(_letters(policy.mud.mfg_name))
    return tuple(h for h in hints if len(h) >= 3)


def _is_maker(domain: str, hints: Iterable[str]) -> bool:
    """True when ``domain`` looks like the maker's own (``tplinkcloud.com`` for a MUD file
    at ``tplinkcamera.com``): its first label and a maker hint share a long prefix."""
    label = _letters(domain.split(".")[0])
    for hint in hints:
        common = 0
        for a, b in zip(label, hint, strict=False):
            if a != b:
                break
            common += 1
        if common >= 4 and common * 2 >= min(len(label), len(hint)):
            return True
    return False


def _letters(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def _port(port: PortMatch | None) -> int | None:
    """The single port a match names, else None."""
    if port is None or port.port is None or port.describe() != str(port.port):
        return None
    return port.port


def _bounds(port: PortMatch | None) -> tuple[int, int] | None:
    """The lowest and highest port a range or comparison admits (None: any or "not")."""
    if port is None:
        return None
    if port.operator is PortOperator.RANGE and port.lower is not None and port.upper is not None:
        return port.lower, port.upper
    if port.port is None:
        return None
    return {PortOperator.GT: (port.port + 1, 65535), PortOperator.GTE: (port.port, 65535),
            PortOperator.LT: (0, port.port - 1), PortOperator.LTE: (0, port.port)
            }.get(port.operator)


def _servers(names: set[str], t: Translate) -> str:
    return t("allow.servers.one") if len(names) == 1 else t("allow.servers.many",
                                                            count=len(names))


def _join(items: Iterable[str], t: Translate) -> str:
    return t("allow.list_separator").join(items)


def _add_to(groups: dict[Any, list[str]], key: Any, item: str) -> None:
    _add_unique(groups.setdefault(key, []), item)


def _add_unique(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)
