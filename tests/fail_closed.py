"""The fail-closed property: the kernel never allows what the MUD file does not name.

For a MUD file (usually a random mutant of a corpus file), place the device in a
home where every abstraction the file names has a peer, compile its policy with
``mudguard.policy``, and run sampled flows through two independent judges:

- the compiled libnftables JSON, interpreted (``Kernel`` of
  ``tests/unit/test_evaluate_agreement.py``: chains, verdict maps, sets, payloads);
- ``tests/mud_oracle.py``: a literal reading of the file's JSON.

Every flow the first accepts, the second must allow. Flows are sampled around every
address, network, port, protocol, ICMP type and header value the file names, plus
random ones. ``mutate`` makes the mutants: it adds, removes and replaces matches,
swaps sides, inserts unknown members, changes controller classes, ports, operators,
protocols, networks, actions, direction-initiated and which policy uses an ACL.

Used by ``tests/unit/test_fail_closed.py`` (a CI-sized run) and
``bench/bench_fail_closed.py`` (10,000 mutants).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mudguard.mud import MudFile, parse_mud
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    HomeContext,
    LifecycleState,
    compile_home,
    decide,
    dns_set_name,
)
from mudguard.policy._data import (
    compile_home_data,
    device_elements,
    dns_answer_elements,
    element_commands,
)
from tests.mud_oracle import FROM, TO, Home, OFlow, allows, to_gateway
from tests.unit.test_evaluate_agreement import LAN_IF, WAN_IF, Kernel, transport_bytes

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEV_MAC = "02:00:00:00:00:0a"
DEV = {4: "192.0.2.10", 6: "2001:db8:1::10"}
GW = {4: "192.0.2.1", 6: "2001:db8:1::1"}
LAN = ("192.0.2.0/24", "2001:db8:1::/64")
GROUPS = {4: ("224.0.0.251", "239.255.255.250", "224.0.0.22", "255.255.255.255", "192.0.2.255"),
          6: ("ff02::fb", "ff02::16", "ff05::c")}
WAN_HOST = {4: "198.51.100.99", 6: "2001:db8:e::99"}

# -- the corpus, normalised ------------------------------------------------------------------


def corpus_documents(corpus: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every valid corpus file in RFC 8520 form (``MudFile.to_json``), by name."""
    out = []
    for path in sorted((corpus / "mud").rglob("*.json")):
        result = parse_mud(path.read_bytes())
        if result.ok and result.mud is not None:
            out.append((path.name, json.loads(json.dumps(result.mud.to_json()))))
    return out


# -- mutations -----------------------------------------------------------------------------------

NETWORKS = {4: ["0.0.0.0/0", "192.0.2.0/24", "192.0.2.10/32", "192.0.2.1/32", "198.51.100.0/24",
                "203.0.113.0/25", "224.0.0.251/32", "192.0.2.11/32", "192.0.2.60/31"],
            6: ["::/0", "2001:db8:1::/64", "2001:db8:1::10/128", "2001:db8:1::1/128",
                "2001:db8:f::/48", "ff00::/8", "2001:db8:1::11/128"]}
NAMES = ["cloud.example.com", "update.maker.example", "pool.ntp.org"]
CLASSES = ["urn:ietf:params:mud:dns", "urn:ietf:params:mud:ntp", "urn:ietf:params:mud:gateway",
           "urn:ietf:params:mud:dhcp", "https://controller.example.com/hub", "bacnet"]
PORTS = [0, 1, 22, 53, 67, 68, 80, 123, 443, 546, 547, 1023, 5353, 8080, 65535]
HEADERS = {"ipv4": {"dscp": [0, 46], "ecn": [0, 3], "ttl": [1, 64, 255], "length": [60, 1500],
                    "ihl": [5], "identification": [7], "flags": ["fragment"], "offset": [0]},
           "ipv6": {"dscp": [0, 46], "ttl": [64], "length": [40], "flow-label": [0, 5]},
           "tcp": {"flags": ["syn", "syn ack"], "window-size": [1024], "sequence-number": [1],
                   "data-offset": [5], "urgent-pointer": [0]},
           "udp": {"length": [8, 100]},
           "icmp": {"rest-of-header": ["AAAA"]}}


def _port_spec(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.25:
        low = rng.choice(PORTS)
        return {"lower-port": low, "upper-port": min(65535, low + rng.choice([0, 1, 100, 60000]))}
    return {"operator": rng.choice(["eq", "eq", "neq", "lte", "gte"]), "port": rng.choice(PORTS)}


def _aces(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [ace for acl in doc["ietf-access-control-list:acls"]["acl"]
            for ace in acl.get("aces", {}).get("ace", [])]


def _family_of(matches: dict[str, Any]) -> int:
    return 6 if "ipv6" in matches else 4


def _mutate_ace(ace: dict[str, Any], rng: random.Random) -> None:
    m = ace.setdefault("matches", {})
    fam = _family_of(m)
    ipkey = f"ipv{fam}"
    choice = rng.randrange(13)
    if choice == 0:  # a network on either side
        side = rng.choice(["source", "destination"])
        m.setdefault(ipkey, {})[f"{side}-{ipkey}-network"] = rng.choice(NETWORKS[fam])
    elif choice == 1:  # a DNS name on either side
        side = rng.choice(["src", "dst"])
        m.setdefault(ipkey, {})[f"ietf-acldns:{side}-dnsname"] = rng.choice(NAMES)
    elif choice == 2:  # swap sides
        for container in m.values():
            if isinstance(container, dict):
                for a, b in (("source", "destination"), ("src", "dst")):
                    swapped = {}
                    for key, value in container.items():
                        new = key.replace(a, "\0").replace(b, a).replace("\0", b)
                        swapped[new] = value
                    container.clear()
                    container.update(swapped)
    elif choice == 3:  # a MUD abstraction
        key = rng.choice(["controller", "controller", "my-controller", "local-networks",
                          "same-manufacturer", "manufacturer", "model"])
        value: Any = {"controller": rng.choice(CLASSES), "manufacturer": "maker.example",
                      "model": "https://maker.example/other.json"}.get(key, [None])
        m.setdefault("ietf-mud:mud", {})[key] = value
    elif choice == 4:  # ports and operators
        proto = rng.choice(["tcp", "udp"])
        for other in ("tcp", "udp", "icmp"):
            if other != proto:
                m.pop(other, None)
        if ipkey in m:
            m[ipkey]["protocol"] = 6 if proto == "tcp" else 17
        side = rng.choice(["source-port", "destination-port"])
        m.setdefault(proto, {})[side] = _port_spec(rng)
    elif choice == 5:  # a header field
        container = rng.choice(list(HEADERS))
        if (container == "ipv4" and fam == 6) or (container == "ipv6" and fam == 4):
            container = ipkey
        if container in ("tcp", "udp", "icmp") and container not in m:
            return
        key = rng.choice(list(HEADERS[container]))
        m.setdefault(container, {})[key] = rng.choice(HEADERS[container][key])
    elif choice == 6:  # remove a member
        keys = [(k, None) for k in m] + [(k, sub) for k, v in m.items() if isinstance(v, dict)
                                        for sub in v]
        if keys:
            key, sub = rng.choice(keys)
            if sub is None:
                del m[key]
            else:
                del m[key][sub]
    elif choice == 7:  # the action
        ace["actions"] = {"forwarding": rng.choice(["accept", "drop", "reject"])}
    elif choice == 8:  # direction-initiated
        if "tcp" in m:
            m["tcp"]["ietf-mud:direction-initiated"] = rng.choice([FROM, TO])
    elif choice == 9:  # a protocol number
        m.setdefault(ipkey, {})["protocol"] = rng.choice([1, 2, 6, 17, 58, 0])
    elif choice == 10:  # an unknown member somewhere
        target = rng.choice([m, *[v for v in m.values() if isinstance(v, dict)]])
        target[rng.choice(["frobnicate", "x-unknown:thing"])] = 1
    elif choice == 11:  # ICMP
        for other in ("tcp", "udp"):
            m.pop(other, None)
        m["icmp"] = {k: v for k, v in (("type", rng.choice([0, 8, 128, 133, 3])),
                                        ("code", rng.choice([0, 1]))) if rng.random() < 0.7}
        if ipkey in m:
            m[ipkey]["protocol"] = 1 if fam == 4 else 58
    else:  # eth
        eth = m.setdefault("eth", {})
        key = rng.choice(["ethertype", "destination-mac-address", "source-mac-address",
                          "destination-mac-address-mask"])
        eth[key] = {"ethertype": rng.choice([0x0800, 0x86DD, 0x888E]),
                    "destination-mac-address": rng.choice(["ff:ff:ff:ff:ff:ff",
                                                           "02:00:00:00:00:01"]),
                    "source-mac-address": DEV_MAC,
                    "destination-mac-address-mask": "ff:ff:ff:00:00:00"}[key]


def mutate(doc: dict[str, Any], rng: random.Random, steps: int = 3) -> dict[str, Any]:
    """A copy of ``doc`` with ``steps`` random mutations."""
    out = copy.deepcopy(doc)
    mud = out["ietf-mud:mud"]
    for _ in range(steps):
        aces = _aces(out)
        if aces and rng.random() < 0.85:
            _mutate_ace(rng.choice(aces), rng)
            continue
        acls = out["ietf-access-control-list:acls"]["acl"]
        if not acls:
            continue
        name = rng.choice(acls)["name"]
        for key in ("from-device-policy", "to-device-policy"):  # move an ACL between policies
            lists = mud.setdefault(key, {}).setdefault("access-lists", {}).setdefault(
                "access-list", [])
            present = [e for e in lists if e.get("name") == name]
            if present:
                lists.remove(present[0])
            elif rng.random() < 0.5:
                lists.append({"name": name})
    return out


# -- the home ---------------------------------------------------------------------------------


@dataclass
class Trial:
    """One file placed in a home: both judges' view of it."""

    doc: dict[str, Any]
    mud: MudFile
    home: Home
    kernel: Kernel
    remotes: dict[int, list[str]] = field(default_factory=dict)
    policy: DevicePolicy | None = None
    context: HomeContext | None = None
    dns: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    answers: dict[str, set[str]] = field(default_factory=dict)


def _mud_values(doc: dict[str, Any], key: str) -> list[str]:
    out = []
    for ace in _aces(doc):
        value = ace.get("matches", {}).get("ietf-mud:mud", {}).get(key)
        if isinstance(value, str):
            out.append(value)
    return sorted(set(out))


def place(doc: dict[str, Any], mud: MudFile, *, gateway_controls: bool = True) -> Trial:
    """The device of ``mud`` in a home where every abstraction of its file has a peer
    (with ``gateway_controls``, the gateway is also one of every controller class)."""
    classes = _mud_values(doc, "controller")
    makers = _mud_values(doc, "manufacturer")
    models = _mud_values(doc, "model")
    me = DeviceFacts(mac=DEV_MAC, ipv4=(DEV[4],), ipv6=(DEV[6],), mud_url=mud.mud_url,
                     state=LifecycleState.PROFILED)
    others = [DeviceFacts(mac="02:00:00:00:01:01", ipv4=("192.0.2.11",),
                          ipv6=("2001:db8:1::11",), mud_url=mud.mud_url,
                          state=LifecycleState.PROFILED)]
    for i, host in enumerate(makers):
        others.append(DeviceFacts(mac=f"02:00:00:00:02:{i:02x}", ipv4=(f"192.0.2.{20 + i}",),
                                  mud_url=f"https://{host}/x.json", state=LifecycleState.PROFILED))
    for i, url in enumerate(models):
        others.append(DeviceFacts(mac=f"02:00:00:00:03:{i:02x}", ipv4=(f"192.0.2.{40 + i}",),
                                  mud_url=url, state=LifecycleState.PROFILED))
    on_gateway = (GW[4], GW[6]) if gateway_controls else ()
    controllers = {c: (f"192.0.2.{60 + i}", f"2001:db8:1::{60 + i:x}", *on_gateway)
                   for i, c in enumerate(classes)}
    mine = ("192.0.2.70", "2001:db8:1::70", GW[4], GW[6])
    context = HomeContext(lan_prefixes=LAN, gateway_addresses=(GW[4], GW[6]),
                          lan_interface=LAN_IF, wan_interface=WAN_IF, portal_ports=(8443,),
                          controllers=controllers, my_controllers={mud.mud_url: mine},
                          devices=(me, *others))
    policy = decide(me, mud, (), context, now=NOW)
    names: dict[str, set[str]] = {}
    for i, name in enumerate(sorted(mud.dns_names() | set(NAMES))):
        names[name] = {f"203.0.113.{10 + i}", f"2001:db8:f::{10 + i:x}"}
    names[NAMES[0]] |= {"192.0.2.11", DEV[4]}  # answers may be LAN addresses, even the device's
    dns: dict[str, set[tuple[str, str]]] = {}
    for name, answers in names.items():
        for address in answers:
            family = 6 if ":" in address else 4
            dns.setdefault(dns_set_name(name, family), set()).add((DEV[family], address))
    home = Home(device_mac=DEV_MAC, device_url=mud.mud_url, lan=LAN, gateway=(GW[4], GW[6]),
                controllers=controllers, my_controllers=mine,
                devices={o.mud_url or "": o.ipv4 + o.ipv6 for o in others},
                names={n: frozenset(a) for n, a in names.items()})
    kernel = Kernel(compile_home([policy], context), dns)
    remotes: dict[int, list[str]] = {4: [], 6: []}
    pool = [GW[4], GW[6], WAN_HOST[4], WAN_HOST[6], *GROUPS[4], *GROUPS[6]]
    pool += [a for addrs in controllers.values() for a in addrs] + list(mine)
    pool += [a for o in others for a in o.ipv4 + o.ipv6]
    pool += [a for answers in names.values() for a in answers]
    for fam in (4, 6):
        for text in NETWORKS[fam] + _networks(doc, fam):
            net = ipaddress.ip_network(text, strict=False)
            pool += [str(net.network_address), str(net.broadcast_address)]
            if net.num_addresses > 2:
                pool.append(str(net.network_address + 1))
    for address in pool:
        family = ipaddress.ip_address(address).version
        if address not in remotes[family] and address not in (DEV[4], DEV[6]):
            remotes[family].append(address)
    return Trial(doc=doc, mud=mud, home=home, kernel=kernel, remotes=remotes, policy=policy,
                 context=context, dns=dns, answers=names)


def data_kernel(policy: DevicePolicy, context: HomeContext,
                answers: dict[str, set[str]]) -> Kernel:
    """The same policy compiled as data (``policy._data``): the fixed ruleset, the
    device's elements and, for each DNS name, the elements its answers add."""
    record = device_elements(policy, context)
    commands = compile_home_data([policy], context).commands()
    pairs: dict[str, set[tuple[str, str]]] = {}  # a fallback device's per-name sets
    for name, addresses in answers.items():
        for address in sorted(addresses):
            family = 6 if ":" in address else 4
            for mine in (policy.device.ipv4 if family == 4 else policy.device.ipv6):
                found = dns_answer_elements(record, name, mine, address)
                if record.fallback:
                    for set_name, elements in found.items():
                        pairs.setdefault(set_name, set()).update(
                            tuple(e["concat"]) for e in elements)
                else:
                    commands += element_commands("add", found, timeout=60)
    return Kernel(commands, pairs)


def _networks(doc: dict[str, Any], fam: int) -> list[str]:
    out = []
    for ace in _aces(doc):
        ip = ace.get("matches", {}).get(f"ipv{fam}", {})
        for key, value in ip.items():
            if key.endswith("-network") and isinstance(value, str):
                out.append(value)
    return out


# -- flows ------------------------------------------------------------------------------------


def _named(doc: dict[str, Any]) -> tuple[list[int], list[int], list[tuple[str, Any]]]:
    """Ports, ICMP types and header (key, value) pairs the file names."""
    ports: set[int] = set(PORTS)
    types: set[int] = {0, 8, 128, 133, 135}
    headers: list[tuple[str, Any]] = []
    for ace in _aces(doc):
        for container, spec in ace.get("matches", {}).items():
            if not isinstance(spec, dict):
                continue
            for key, value in spec.items():
                if key in ("source-port", "destination-port") and isinstance(value, dict):
                    for bound in ("port", "lower-port", "upper-port"):
                        if isinstance(value.get(bound), int):
                            ports |= {max(0, value[bound] - 1), value[bound],
                                      min(65535, value[bound] + 1)}
                elif container == "icmp" and key == "type" and isinstance(value, int):
                    types.add(value)
                elif container in HEADERS and key in HEADERS[container]:
                    headers.append((f"{container}.{key}", value))
    return sorted(ports), sorted(types), headers


def _satisfying_port(spec: Any, rng: random.Random, ports: list[int]) -> int:
    if not isinstance(spec, dict):
        return rng.choice(ports)
    if "lower-port" in spec:
        return int(rng.choice([spec["lower-port"], spec["upper-port"]]))
    port = int(spec.get("port", 0))
    return {"eq": port, "lte": max(port - rng.randrange(2), 0),
            "gte": min(port + rng.randrange(2), 65535)}.get(spec.get("operator", "eq"),
                                                         rng.choice(ports))


def _aimed(trial: Trial, rng: random.Random, ports: list[int]) -> dict[str, Any]:
    """Flow fields aimed at one ACE of the file: its direction, family, protocol, ports
    and peer (so both verdicts are exercised, not only refusals)."""
    mud = trial.doc["ietf-mud:mud"]
    used = [(d, e.get("name")) for d in (FROM, TO)
            for e in mud.get(f"{d}-policy", {}).get("access-lists", {}).get("access-list", [])]
    acls = {a["name"]: a for a in trial.doc["ietf-access-control-list:acls"]["acl"]}
    used = [(d, n) for d, n in used if n in acls and acls[n].get("aces", {}).get("ace")]
    if not used:
        return {}
    direction, name = rng.choice(used)
    m = rng.choice(acls[name]["aces"]["ace"]).get("matches", {})
    family = 6 if "ipv6" in m else 4 if "ipv4" in m else rng.choice([4, 6])
    ip = m.get(f"ipv{family}", {})
    fields: dict[str, Any] = {"direction": direction, "family": family}
    proto = {"tcp": 6, "udp": 17}.get(next((k for k in ("tcp", "udp") if k in m), ""))
    if proto is None and "icmp" in m:
        proto = 1 if family == 4 else 58
    fields["protocol"] = proto if proto is not None else ip.get("protocol", rng.choice([6, 17]))
    l4 = m.get("tcp") or m.get("udp") or {}
    fields["sport"] = _satisfying_port(l4.get("source-port"), rng, ports)
    fields["dport"] = _satisfying_port(l4.get("destination-port"), rng, ports)
    far = "destination" if direction == FROM else "source"
    network = ip.get(f"{far}-ipv{family}-network")
    name_key = f"ietf-acldns:{'dst' if direction == FROM else 'src'}-dnsname"
    remote = None
    if isinstance(network, str):
        net = ipaddress.ip_network(network, strict=False)
        remote = str(net.network_address + (1 if net.num_addresses > 2 else 0))
    elif isinstance(ip.get(name_key), str):
        answers = sorted(a for a in trial.home.names.get(ip[name_key], ())
                         if ipaddress.ip_address(a).version == family)
        remote = rng.choice(answers) if answers else None
    elif "ietf-mud:mud" in m:
        candidates = [a for a in trial.remotes[family] if ipaddress.ip_address(a).is_private
                      or a in trial.home.gateway]
        remote = rng.choice(candidates) if candidates else None
    if remote is not None:
        fields["remote"] = remote
    icmp = m.get("icmp", {})
    fields["icmp_type"], fields["icmp_code"] = icmp.get("type"), icmp.get("code")
    return fields


def flows(trial: Trial, rng: random.Random, count: int) -> Iterator[OFlow]:
    """``count`` flows sampled around what the file names (half aimed at one ACE)."""
    ports, types, headers = _named(trial.doc)
    for _ in range(count):
        aim = _aimed(trial, rng, ports) if rng.random() < 0.5 else {}
        direction = aim.get("direction") or rng.choice([FROM, TO])
        family = aim.get("family") or rng.choice([4, 6])
        remote = aim.get("remote") or rng.choice(trial.remotes[family])
        if direction == TO and remote in trial.home.gateway:
            remote = WAN_HOST[family]  # the gateway's own output is not filtered
        if direction == TO and (ipaddress.ip_address(remote).is_multicast
                                or remote == "255.255.255.255"):
            # A multicast or limited-broadcast source is a martian: the kernel drops it
            # before any hook (ip_route_input, ip6_rcv), so no rule ever judges it.
            remote = WAN_HOST[family]
        protocol = aim.get("protocol")
        if not isinstance(protocol, int) or rng.random() < 0.1:
            protocol = rng.choice([6, 6, 17, 17, 1 if family == 4 else 58, 2, rng.randrange(256)])
        src, dst = (DEV[family], remote) if direction == FROM else (remote, DEV[family])
        sport = dport = itype = icode = None
        if protocol in (6, 17):
            sport = aim.get("sport", rng.choice(ports))
            dport = aim.get("dport", rng.choice(ports))
            if rng.random() < 0.2:
                sport, dport = rng.choice(ports), rng.choice(ports)
        if protocol in (1, 58):
            itype = aim.get("icmp_type")
            itype = rng.choice(types) if itype is None else itype
            icode = aim.get("icmp_code")
            icode = rng.choice([0, 0, 1]) if icode is None else icode
        syn = rng.random() < 0.7
        initiator = direction if syn else rng.choice([FROM, TO])
        chosen = dict(rng.sample(headers, k=min(len(headers), rng.randrange(3)))) \
            if headers else {}
        yield OFlow(direction=direction, family=family, src=src, dst=dst, protocol=protocol,
                    sport=sport, dport=dport, icmp_type=itype, icmp_code=icode, syn=syn,
                    initiator=initiator,
                    eth_src=DEV_MAC if direction == FROM else "02:00:00:00:ff:ff",
                    eth_dst=rng.choice(["ff:ff:ff:ff:ff:ff", "02:00:00:00:00:01",
                                        "02:00:00:00:00:ff"]),
                    headers=chosen)


def _packet(flow: OFlow) -> dict[Any, Any]:
    ip = "ip" if flow.family == 4 else "ip6"
    out = flow.direction == FROM
    packet: dict[Any, Any] = {
        ("meta", "iifname"): LAN_IF if out else WAN_IF,
        ("meta", "oifname"): WAN_IF if out else LAN_IF,
        ("meta", "nfproto"): "ipv4" if flow.family == 4 else "ipv6",
        ("meta", "protocol"): 0x0800 if flow.family == 4 else 0x86DD,
        ("meta", "l4proto"): flow.protocol,
        ("ether", "saddr"): flow.eth_src, ("ether", "daddr"): flow.eth_dst,
        (ip, "saddr"): flow.src, (ip, "daddr"): flow.dst,
        ("ct", "state"): "new", ("ct", "direction"): "original",
    }
    transport = {6: "tcp", 17: "udp"}.get(flow.protocol)
    if transport:
        packet[(transport, "sport")] = flow.sport
        packet[(transport, "dport")] = flow.dport
    if flow.protocol == 6:
        packet[("tcp", "flags")] = {"syn"} if flow.syn else {"ack"}
    icmp = {1: "icmp", 58: "icmpv6"}.get(flow.protocol)
    if icmp and (flow.family == 4) == (flow.protocol == 1):
        packet[(icmp, "type")] = flow.icmp_type
        packet[(icmp, "code")] = flow.icmp_code
    packet.update(transport_bytes(flow.protocol, flow.sport, flow.dport, flow.icmp_type,
                                  flow.icmp_code))
    return packet


def kernel_accepts(trial: Trial, flow: OFlow, kernel: Kernel | None = None) -> bool:
    """The compiled ruleset's verdict on the flow's opening packet (``kernel``: another
    compilation of the same trial, e.g. ``data_kernel``)."""
    kernel = kernel or trial.kernel
    hook = "input" if flow.direction == FROM and to_gateway(flow.dst, trial.home) else "forward"
    packet = _packet(flow)
    for _prio, table, name, chain_hook, policy in kernel.base:
        if chain_hook != hook:
            continue
        verdict = kernel._run(table, name, packet, 0) or policy
        if verdict == "drop":
            return False
    return True


@dataclass
class Outcome:
    """What one file's trial found."""

    refused: bool = False
    flows: int = 0
    accepted: int = 0
    widenings: list[str] = field(default_factory=list)


def check(doc: dict[str, Any], rng: random.Random, count: int = 150) -> Outcome:
    """Run ``count`` sampled flows of ``doc`` through both judges."""
    result = parse_mud(json.dumps(doc))
    if not result.ok or result.mud is None:
        return Outcome(refused=True)
    trial = place(doc, result.mud)
    outcome = Outcome()
    for flow in flows(trial, rng, count):
        outcome.flows += 1
        if kernel_accepts(trial, flow):
            outcome.accepted += 1
            if not allows(doc, flow, trial.home):
                outcome.widenings.append(repr(flow))
    return outcome
