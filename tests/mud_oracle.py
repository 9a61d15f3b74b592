"""A small, literal interpreter of a MUD file's ACEs: the judge of the compiler.

Written from RFC 8519/8520 (and mudguard's documented choices below), reading the
file's RFC 7951 JSON directly, sharing no code with ``mudguard.policy``: given the
home and one concrete flow (the packet that opens it), does the file allow it?

- The device's from-device ACLs judge flows it sends, its to-device ACLs flows it
  receives; ACLs in policy order (an ``ipv4-acl-type`` ACL only IPv4 flows, an
  ``ipv6-acl-type`` one only IPv6), ACEs in file order, the first ACE whose every
  member matches decides (accept allows, drop/reject refuse); none matches: refused.
- A member is a test on the flow. Members it knows: ipv4/ipv6 (family, protocol,
  networks, DNS names), tcp/udp (ports, direction-initiated), icmp (type, code),
  eth (ethertype, MACs and masks), ietf-mud (every abstraction). Anything else is a
  header field compared for equality with ``flow.headers`` (a flow carries a value
  only for the fields the test sets; a missing value never equals).
- Documented choices, the same as mudguard's: a well-known controller class names
  one gateway service (``urn:ietf:params:mud:dns``: the gateway's addresses, UDP/TCP
  53; ``...:ntp``: UDP 123); every other class means the owner's configured
  controllers of that class. ``local-networks`` means the LAN prefixes and what
  never leaves the link (multicast, broadcasts).
- The gateway's own baseline (README "Baseline traffic": DHCP, DNS, neighbour
  discovery and multicast listener reports (IGMP, MLDv1/v2) to the gateway) is allowed
  whatever the file says: it is not the
  file's, and mudguard documents it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

FROM, TO = "from-device", "to-device"
LINK_GROUPS = ("224.0.0.0/4", "255.255.255.255/32", "ff00::/8")
ACL_FAMILIES = {"ipv4-acl-type": (4,), "mixed-eth-ipv4-acl-type": (4,),
                "ipv6-acl-type": (6,), "mixed-eth-ipv6-acl-type": (6,)}
SERVICES = {"urn:ietf:params:mud:dns": {(17, 53), (6, 53)},
            "urn:ietf:params:mud:ntp": {(17, 123)}}


@dataclass(frozen=True)
class Home:
    """Everything the file's abstractions can refer to."""

    device_mac: str
    device_url: str
    lan: tuple[str, ...]
    gateway: tuple[str, ...]
    controllers: Mapping[str, tuple[str, ...]]
    my_controllers: tuple[str, ...]
    devices: Mapping[str, tuple[str, ...]]  # other device's MUD URL -> its addresses
    names: Mapping[str, frozenset[str]]  # DNS name -> answers the device was given


@dataclass(frozen=True)
class OFlow:
    """The packet that opens a flow, seen from the device."""

    direction: str  # FROM or TO
    family: int
    src: str
    dst: str
    protocol: int
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    syn: bool = True  # a bare SYN (TCP): it opens the connection
    initiator: str = FROM  # who opened the TCP connection this packet belongs to
    eth_src: str = ""
    eth_dst: str = ""
    headers: Mapping[str, Any] = field(default_factory=dict)  # "ipv4.ttl" -> 64

    @property
    def remote(self) -> str:
        return self.dst if self.direction == FROM else self.src


def _ip(text: str) -> Any:
    return ipaddress.ip_address(text)


def _in(address: str, prefixes: Any) -> bool:
    ip = _ip(address)
    for prefix in prefixes:
        net = ipaddress.ip_network(prefix, strict=False)
        if net.version == ip.version and ip in net:
            return True
    return False


def _local(address: str, home: Home) -> bool:
    broadcasts = [str(ipaddress.ip_network(p).broadcast_address) for p in home.lan
                  if ipaddress.ip_network(p).version == 4]
    return _in(address, (*home.lan, *LINK_GROUPS, *broadcasts))


def to_gateway(address: str, home: Home) -> bool:
    """The gateway receives it itself: its addresses, multicast, broadcasts."""
    broadcasts = [str(ipaddress.ip_network(p).broadcast_address) for p in home.lan
                  if ipaddress.ip_network(p).version == 4]
    return _in(address, (*home.gateway, *LINK_GROUPS, *broadcasts))


def baseline_allows(flow: OFlow, home: Home) -> bool:
    """DHCP, DNS, neighbour discovery and multicast listener reports to the gateway
    (not the file's: the gateway's)."""
    if flow.direction != FROM or not to_gateway(flow.dst, home):
        return False
    if flow.protocol in (6, 17) and flow.dport == 53:
        return True
    if flow.protocol == 17 and (flow.sport, flow.dport) in ((68, 67), (546, 547)):
        return (flow.family == 4) == (flow.dport == 67)
    if flow.family == 4 and flow.protocol == 2:  # IGMP (any type: RFC 3376 reports)
        return True
    return (flow.family == 6 and flow.protocol == 58
            and flow.icmp_type in (131, 132, 133, 135, 136, 143))


def _port_ok(spec: Mapping[str, Any], port: int | None) -> bool:
    if port is None:
        return False
    if "lower-port" in spec:
        return int(spec["lower-port"]) <= port <= int(spec["upper-port"])
    value, op = int(spec["port"]), spec.get("operator", "eq")
    return {"eq": port == value, "neq": port != value, "lte": port <= value,
            "gte": port >= value, "lt": port < value, "gt": port > value}[op]


def _mac_ok(value: str, mask: str | None, actual: str) -> bool:
    if not actual:
        return False
    a, v = int(actual.replace(":", ""), 16), int(value.replace(":", ""), 16)
    m = int(mask.replace(":", ""), 16) if mask else (1 << 48) - 1
    return a & m == v & m


def _header_ok(key: str, value: Any, flow: OFlow) -> bool:
    return key in flow.headers and json.dumps(flow.headers[key]) == json.dumps(value)


def _ip_ok(fam: str, spec: Mapping[str, Any], flow: OFlow, home: Home) -> bool:
    if flow.family != (4 if fam == "ipv4" else 6):
        return False
    for key, value in spec.items():
        bare = key.split(":", 1)[-1]
        if bare == "protocol":
            ok = flow.protocol == value
        elif bare in (f"source-{fam}-network", f"destination-{fam}-network"):
            ok = _in(flow.src if bare.startswith("source") else flow.dst, [value])
        elif bare in ("src-dnsname", "dst-dnsname"):
            address = flow.src if bare == "src-dnsname" else flow.dst
            answers = home.names.get(str(value).lower().rstrip("."), frozenset())
            ok = str(_ip(address)) in answers
        else:
            ok = _header_ok(f"{fam}.{bare}", value, flow)
        if not ok:
            return False
    return True


def _l4_ok(proto: str, spec: Mapping[str, Any], flow: OFlow) -> bool:
    if flow.protocol != {"tcp": 6, "udp": 17}[proto]:
        return False
    for key, value in spec.items():
        bare = key.split(":", 1)[-1]
        if bare == "source-port":
            ok = _port_ok(value, flow.sport)
        elif bare == "destination-port":
            ok = _port_ok(value, flow.dport)
        elif bare == "direction-initiated":
            ok = flow.initiator == value
        else:
            ok = _header_ok(f"{proto}.{bare}", value, flow)
        if not ok:
            return False
    return True


def _icmp_ok(spec: Mapping[str, Any], flow: OFlow) -> bool:
    if flow.protocol != (1 if flow.family == 4 else 58):
        return False
    for key, value in spec.items():
        if key == "type":
            ok = flow.icmp_type == value
        elif key == "code":
            ok = flow.icmp_code == value
        else:
            ok = _header_ok(f"icmp.{key}", value, flow)
        if not ok:
            return False
    return True


def _eth_ok(spec: Mapping[str, Any], flow: OFlow) -> bool:
    for key, value in spec.items():
        if key == "ethertype":
            ok = value == (0x0800 if flow.family == 4 else 0x86DD)
        elif key == "source-mac-address":
            ok = _mac_ok(value, spec.get("source-mac-address-mask"), flow.eth_src)
        elif key == "destination-mac-address":
            ok = _mac_ok(value, spec.get("destination-mac-address-mask"), flow.eth_dst)
        elif key.endswith("-mask"):
            ok = key.removesuffix("-mask") in spec  # a mask alone says nothing
        else:
            ok = _header_ok(f"eth.{key}", value, flow)
        if not ok:
            return False
    return True


def _authority(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _mud_ok(spec: Mapping[str, Any], flow: OFlow, home: Home) -> bool:
    remote = flow.remote
    for key, value in spec.items():
        if key == "local-networks":
            ok = _local(remote, home)
        elif key == "same-manufacturer":
            ok = _in(remote, [a for url, addrs in home.devices.items()
                              if _authority(url) == _authority(home.device_url) for a in addrs])
        elif key == "manufacturer":
            ok = _in(remote, [a for url, addrs in home.devices.items()
                              if _authority(url) == str(value).lower() for a in addrs])
        elif key == "model":
            ok = _in(remote, home.devices.get(value, ()))
        elif key == "my-controller":
            ok = _in(remote, home.my_controllers)
        elif key == "controller":
            if value in SERVICES:
                side = flow.dport if flow.direction == FROM else flow.sport
                ok = (_in(remote, home.gateway)
                      and (flow.protocol, side) in SERVICES[value])
            else:
                ok = _in(remote, home.controllers.get(value, ()))
        else:
            ok = False  # an abstraction this judge does not know never holds
        if not ok:
            return False
    return True


def ace_matches(matches: Mapping[str, Any], flow: OFlow, home: Home) -> bool:
    """True if every member of an ACE's ``matches`` holds for ``flow``."""
    for key, spec in matches.items():
        if key in ("ipv4", "ipv6"):
            ok = _ip_ok(key, spec, flow, home)
        elif key in ("tcp", "udp"):
            ok = _l4_ok(key, spec, flow)
        elif key == "icmp":
            ok = _icmp_ok(spec, flow)
        elif key == "eth":
            ok = _eth_ok(spec, flow)
        elif key == "ietf-mud:mud":
            ok = _mud_ok(spec, flow, home)
        else:
            ok = _header_ok(key, spec, flow)
        if not ok:
            return False
    return True


def file_allows(doc: Mapping[str, Any], flow: OFlow, home: Home) -> bool:
    """The file's verdict on ``flow`` (first matching ACE; none: refused)."""
    mud = doc["ietf-mud:mud"]
    policy = mud.get(f"{flow.direction}-policy", {})
    names = [entry["name"] for entry in policy.get("access-lists", {}).get("access-list", [])]
    acls = {acl["name"]: acl for acl in doc["ietf-access-control-list:acls"]["acl"]}
    for name in names:
        families = ACL_FAMILIES.get(str(acls[name].get("type", "")).split(":")[-1], (4, 6))
        if flow.family not in families:
            continue  # RFC 8519: an ipv4-acl-type ACL matches IPv4 packets only, and so on
        for ace in acls[name].get("aces", {}).get("ace", []):
            if ace_matches(ace.get("matches", {}), flow, home):
                return str(ace["actions"]["forwarding"]).split(":")[-1] == "accept"
    return False


def allows(doc: Mapping[str, Any], flow: OFlow, home: Home) -> bool:
    """What the gateway may let through for this file: the file's accepts and the baseline."""
    return baseline_allows(flow, home) or file_allows(doc, flow, home)
