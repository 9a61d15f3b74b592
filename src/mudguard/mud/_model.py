"""Typed model of a MUD file (RFC 8520) and its access lists (RFC 8519).

Theory of operation: the parser (``_parse.py``) turns JSON into these frozen
objects after normalising draft-era spellings; nothing here does I/O. Every
object is immutable, so a parsed profile can be shared between the compiler,
the capture checker and the portal without copying.

House rules:
- Names from the MUD file (ACL and ACE names, DNS names, URIs) are data. They
  are never used to name kernel objects; the policy compiler makes its own.
- Anything the model cannot represent is reported by the parser, never
  silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mudguard.mud.tls_profile import TlsProfile
    from mudguard.mud.transparency import Transparency


class Direction(StrEnum):
    """Which side opens a TCP connection (``ietf-mud:direction-initiated``)."""

    FROM_DEVICE = "from-device"
    TO_DEVICE = "to-device"


class AclType(StrEnum):
    """The ACL types of RFC 8519 §4.1 (``ietf-access-control-list`` identities)."""

    IPV4 = "ipv4-acl-type"
    IPV6 = "ipv6-acl-type"
    ETH = "eth-acl-type"
    MIXED_ETH_IPV4 = "mixed-eth-ipv4-acl-type"
    MIXED_ETH_IPV6 = "mixed-eth-ipv6-acl-type"
    MIXED_ETH_IPV4_IPV6 = "mixed-eth-ipv4-ipv6-acl-type"


class Forwarding(StrEnum):
    """An ACE's forwarding action (RFC 8519 ``forwarding-action`` identities)."""

    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"


class PortOperator(StrEnum):
    """Operators of RFC 8519's ``port-range-or-operator`` (``operator`` case)."""

    EQ = "eq"
    NEQ = "neq"
    LT = "lt"
    GT = "gt"
    LTE = "lte"
    GTE = "gte"
    RANGE = "range"


class Severity(StrEnum):
    """How serious a finding is: errors make a file unusable, warnings do not."""

    ERROR = "error"
    WARNING = "warning"


PathPart = str | int


def render_path(path: tuple[PathPart, ...]) -> str:
    """Render a JSON path as ``acls.acl[2].aces.ace[0].matches``.

    Module prefixes (``ietf-access-control-list:``) are dropped for readability;
    list indexes are shown in brackets.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part.split(":", 1)[-1]
            out += f".{name}" if out else name
    return out or "(document)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One problem found in a MUD file, with the JSON path where it was found."""

    path: tuple[PathPart, ...]
    severity: Severity
    message: str

    @property
    def where(self) -> str:
        """The path rendered for people."""
        return render_path(self.path)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly form for ``--json`` output and the API."""
        return {"path": self.where, "severity": self.severity.value, "message": self.message}


class Findings:
    """Findings collected while an extension's container is read, in order."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def error(self, path: tuple[PathPart, ...], message: str) -> None:
        """Record an error at ``path``."""
        self.items.append(Finding(path=path, severity=Severity.ERROR, message=message))

    def warn(self, path: tuple[PathPart, ...], message: str) -> None:
        """Record a warning at ``path``."""
        self.items.append(Finding(path=path, severity=Severity.WARNING, message=message))


@dataclass(frozen=True, slots=True, kw_only=True)
class PortMatch:
    """A port test: ``operator`` with ``port``, or ``range`` with ``lower``..``upper``."""

    operator: PortOperator
    port: int | None = None
    lower: int | None = None
    upper: int | None = None

    def contains(self, port: int) -> bool:
        """True if ``port`` satisfies this match."""
        op = self.operator
        if op is PortOperator.RANGE:
            assert self.lower is not None and self.upper is not None
            return self.lower <= port <= self.upper
        assert self.port is not None
        value = self.port
        return {
            PortOperator.EQ: port == value,
            PortOperator.NEQ: port != value,
            PortOperator.LT: port < value,
            PortOperator.GT: port > value,
            PortOperator.LTE: port <= value,
            PortOperator.GTE: port >= value,
        }[op]

    def describe(self) -> str:
        """Short human text, e.g. ``443`` or ``1024-65535``."""
        if self.operator is PortOperator.RANGE:
            return f"{self.lower}-{self.upper}"
        if self.operator is PortOperator.EQ:
            return str(self.port)
        symbol = {
            PortOperator.NEQ: "not ",
            PortOperator.LT: "<",
            PortOperator.GT: ">",
            PortOperator.LTE: "<=",
            PortOperator.GTE: ">=",
        }[self.operator]
        return f"{symbol}{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class IpMatch:
    """The ``ipv4`` or ``ipv6`` match container of an ACE."""

    version: int
    protocol: int | None = None
    src_network: str | None = None
    dst_network: str | None = None
    src_dnsname: str | None = None
    dst_dnsname: str | None = None
    dscp: int | None = None
    ecn: int | None = None
    ttl: int | None = None
    length: int | None = None
    flow_label: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportMatch:
    """The ``tcp`` or ``udp`` match container (``protocol`` is 6 or 17)."""

    protocol: int
    src_port: PortMatch | None = None
    dst_port: PortMatch | None = None
    direction_initiated: Direction | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IcmpMatch:
    """The ``icmp`` match container (ICMPv4 or ICMPv6 by the ACE's IP version)."""

    type: int | None = None
    code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EthMatch:
    """The ``eth`` match container (RFC 8519 §4.1)."""

    src_mac: str | None = None
    src_mac_mask: str | None = None
    dst_mac: str | None = None
    dst_mac_mask: str | None = None
    ethertype: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MudMatch:
    """The MUD abstractions of RFC 8520 §8 (``ietf-mud:mud`` inside ``matches``)."""

    manufacturer: str | None = None
    same_manufacturer: bool = False
    model: str | None = None
    local_networks: bool = False
    controller: str | None = None
    my_controller: bool = False

    def is_empty(self) -> bool:
        """True if no abstraction is set."""
        return self == MudMatch()


@dataclass(frozen=True, slots=True, kw_only=True)
class Matches:
    """Everything an ACE matches on; ``None`` means "not constrained"."""

    ip: IpMatch | None = None
    transport: TransportMatch | None = None
    icmp: IcmpMatch | None = None
    eth: EthMatch | None = None
    mud: MudMatch | None = None
    # Fields present in the file that mudguard does not model: (container, member, JSON
    # text of the value), container "" for a member of ``matches`` itself. Kept so the
    # policy layer can refuse to widen (see ``ace_limits``) and ``to_json`` can re-emit them.
    unenforced: tuple[tuple[str, str, str], ...] = ()
    # RFC 9761 ``ietf-acl-tls:client-profiles``: what the device's (D)TLS ClientHellos
    # on this ACE's flows may offer. Observed (``mudguard.watch.tls``), never compiled.
    tls_profiles: tuple[TlsProfile, ...] = ()

    @property
    def protocol(self) -> int | None:
        """The IP protocol number this ACE is limited to, if any."""
        if self.transport is not None:
            return self.transport.protocol
        if self.icmp is not None:
            return 1 if (self.ip is None or self.ip.version == 4) else 58
        return self.ip.protocol if self.ip is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ace:
    """An access control entry: a name, what it matches and what it does."""

    name: str
    matches: Matches
    action: Forwarding = Forwarding.ACCEPT


@dataclass(frozen=True, slots=True, kw_only=True)
class Acl:
    """An access control list (RFC 8519) with its entries in order."""

    name: str
    type: AclType
    aces: tuple[Ace, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Extension:
    """An extension the file lists (RFC 8520 §3.7) and what mudguard makes of it."""

    name: str
    understood: bool
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class MudFile:
    """A parsed, normalised and validated MUD file."""

    mud_version: int
    mud_url: str
    last_update: datetime
    cache_validity_hours: int
    is_supported: bool
    acls: tuple[Acl, ...]
    from_device_policy: tuple[str, ...]
    to_device_policy: tuple[str, ...]
    mud_signature: str | None = None
    systeminfo: str | None = None
    mfg_name: str | None = None
    model_name: str | None = None
    firmware_rev: str | None = None
    software_rev: str | None = None
    documentation: str | None = None
    extensions: tuple[Extension, ...] = ()
    draft_era: bool = False
    quarantine_ace_names: tuple[str, ...] | None = None
    """draft-richardson-shg-mud-quarantined-access: the ACEs that stay enabled while the
    device is quarantined (None: the file has no ``QUARANTINE_MEMBER``)."""
    transparency: Transparency | None = None
    """RFC 9472: where the SBOM and vulnerability information are (validated)."""
    tls_profile_supported: bool | None = None
    """RFC 9761 ``ietf-mud-tls:is-tls-dtls-profile-supported`` (None: not stated)."""

    def tls_profiled_aces(self) -> tuple[Ace, ...]:
        """The from-device ACEs that carry (D)TLS profiles (RFC 9761), in policy order."""
        return tuple(ace for ace in self.policy_aces(Direction.FROM_DEVICE)
                     if ace.matches.tls_profiles)

    def acl(self, name: str) -> Acl:
        """The ACL called ``name`` (the parser guarantees every policy name exists)."""
        for acl in self.acls:
            if acl.name == name:
                return acl
        raise KeyError(name)

    def policy_aces(self, direction: Direction) -> tuple[Ace, ...]:
        """Every ACE of the from-device or to-device policy, in evaluation order."""
        names = (
            self.from_device_policy if direction is Direction.FROM_DEVICE else self.to_device_policy
        )
        return tuple(ace for name in names for ace in self.acl(name).aces)

    def to_json(self) -> dict[str, object]:
        """The file as RFC 8520 JSON (RFC 7951 encoding), after normalisation.

        Draft-era spellings come out in RFC form, so the result is what mudguard
        enforces, in the standard's words; header fields mudguard does not model
        (e.g. IPv4 ``ihl``) are written back as read (``Matches.unenforced``), so the
        normalised file is never wider than the original.
        """
        mud: dict[str, object] = {
            "mud-version": self.mud_version, "mud-url": self.mud_url,
            "last-update": self.last_update.isoformat(),
            "cache-validity": self.cache_validity_hours, "is-supported": self.is_supported,
        }
        optional = (("mud-signature", self.mud_signature), ("systeminfo", self.systeminfo),
                    ("mfg-name", self.mfg_name), ("model-name", self.model_name),
                    ("firmware-rev", self.firmware_rev), ("software-rev", self.software_rev),
                    ("documentation", self.documentation))
        mud.update({key: value for key, value in optional if value is not None})
        if self.extensions:
            mud["extensions"] = [e.name for e in self.extensions]
            for extension in self.extensions:
                mud.update(extension.data)
        if self.tls_profile_supported is not None:
            mud[TLS_SUPPORTED_MEMBER] = self.tls_profile_supported
        if self.quarantine_ace_names is not None:
            mud[QUARANTINE_MEMBER] = quarantine_json(self.quarantine_ace_names)
        for key, names in (("from-device-policy", self.from_device_policy),
                           ("to-device-policy", self.to_device_policy)):
            mud[key] = {"access-lists": {"access-list": [{"name": n} for n in names]}}
        return {"ietf-mud:mud": mud,
                "ietf-access-control-list:acls": {"acl": [_acl_json(a) for a in self.acls]}}

    def dns_names(self) -> frozenset[str]:
        """Every DNS name any ACE names (src or dst), lower-cased."""
        names: set[str] = set()
        for acl in self.acls:
            for ace in acl.aces:
                ip = ace.matches.ip
                if ip is not None:
                    names.update(n.lower() for n in (ip.src_dnsname, ip.dst_dnsname) if n)
        return frozenset(names)


GATEWAY_SERVICES: Mapping[str, tuple[tuple[int, int], ...]] = {
    "urn:ietf:params:mud:dns": ((17, 53), (6, 53)),
    "urn:ietf:params:mud:ntp": ((17, 123),),
}
"""Well-known controller classes that name one service of the gateway itself:
(protocol, port) pairs. Every other class (``urn:ietf:params:mud:gateway``, ``...:dhcp``,
any URI or bare class name) resolves to the controllers the owner configured for it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """Why an ACE cannot be enforced exactly as written in one direction.

    ``never``: the match can never hold, so the ACE matches nothing whatever its action.
    Otherwise mudguard cannot enforce ``field``: an accepting ACE then allows nothing
    and a dropping one is enforced without the field (it drops more, never less).
    """

    field: str  # the member, as ``ipv4.ttl`` or ``ietf-mud:mud.model``
    reason: str
    never: bool = False


def service_ports(matches: Matches, direction: Direction,
                  service: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """The (protocol, port) pairs of a gateway ``service`` the rest of the ACE still allows
    (the service's port is the destination from the device, the source towards it)."""
    if matches.icmp is not None:
        return ()
    out: list[tuple[int, int]] = []
    for protocol, port in service:
        if matches.protocol is not None and matches.protocol != protocol:
            continue
        t = matches.transport
        side = None if t is None else (t.dst_port if direction is Direction.FROM_DEVICE
                                      else t.src_port)
        if side is not None and not side.contains(port):
            continue
        out.append((protocol, port))
    return tuple(out)


def _peer_fields(m: Matches, direction: Direction) -> list[str]:
    """The members of an ACE that name its peer (the far side), local-networks aside."""
    found: list[str] = []
    if m.mud is not None:
        u = m.mud
        for flag, name in ((u.same_manufacturer, "same-manufacturer"),
                           (bool(u.manufacturer), "manufacturer"), (bool(u.model), "model"),
                           (u.my_controller, "my-controller"),
                           (bool(u.controller), "controller")):
            if flag:
                found.append(f"ietf-mud:mud.{name}")
    ip = m.ip
    if ip is not None:
        fam = f"ipv{ip.version}"
        out_going = direction is Direction.FROM_DEVICE
        if ip.dst_dnsname if out_going else ip.src_dnsname:
            found.append(f"{fam}.ietf-acldns:{'dst' if out_going else 'src'}-dnsname")
        if ip.dst_network if out_going else ip.src_network:
            side = "destination" if out_going else "source"
            found.append(f"{fam}.{side}-{fam}-network")
    return found


_UNENFORCED = "a header field mudguard does not enforce"


def ace_limits(ace: Ace, direction: Direction) -> tuple[Limit, ...]:
    """Everything that keeps ``ace`` from being enforced exactly as written in ``direction``.

    The policy layer turns an ACE with limits into no rule at all (an accept: it allows
    nothing) or a rule without the unenforced fields (a drop: it drops more); the parser
    reports each limit as a warning, so ``mud check`` shows them.
    """
    m, ip = ace.matches, ace.matches.ip
    out: list[Limit] = []
    out_going = direction is Direction.FROM_DEVICE
    if ip is not None:
        fam = f"ipv{ip.version}"
        if ip.src_dnsname if out_going else ip.dst_dnsname:
            # Not ``never``: an answer could hold the device's own address, so a drop
            # that names it is kept (without the name: it drops more).
            out.append(Limit(
                field=f"{fam}.ietf-acldns:{'src' if out_going else 'dst'}-dnsname",
                reason=f"names the device's own side in a {direction.value} ACL (RFC 8520 §8), "
                       "not the peer; mudguard never turns it into a peer"))
        if ip.src_network if out_going else ip.dst_network:
            side = "source" if out_going else "destination"
            out.append(Limit(field=f"{fam}.{side}-{fam}-network",
                             reason=f"tests the device's own address in a {direction.value} "
                                    "ACL, which mudguard does not enforce (the peer is the "
                                    "other side)"))
        for attr, key in (("dscp", "dscp"), ("ecn", "ecn"), ("ttl", "ttl"),
                          ("length", "length"), ("flow_label", "flow-label")):
            if getattr(ip, attr) is not None:
                out.append(Limit(field=f"{fam}.{key}", reason=_UNENFORCED))
    if m.eth is not None:
        for attr, key in (("src_mac", "source-mac-address"),
                          ("src_mac_mask", "source-mac-address-mask"),
                          ("dst_mac_mask", "destination-mac-address-mask")):
            if getattr(m.eth, attr) is not None:
                out.append(Limit(field=f"eth.{key}", reason=_UNENFORCED))
    for container, key, _text in m.unenforced:
        out.append(Limit(field=f"{container}.{key}" if container else key, reason=_UNENFORCED))
    peers = _peer_fields(m, direction)
    for extra in peers[1:]:
        out.append(Limit(field=extra, reason=f"a second peer beside {peers[0]}; mudguard "
                                            "does not intersect peers"))
    controller = m.mud.controller if m.mud is not None else None
    service = GATEWAY_SERVICES.get(controller or "")
    if service is not None and not service_ports(m, direction, service):
        wanted = ", ".join(f"{'TCP' if p == 6 else 'UDP'} {n}" for p, n in service)
        out.append(Limit(field="ietf-mud:mud.controller", never=True,
                         reason=f"{controller} is the gateway's service on {wanted}, which the "
                                "rest of the ACE excludes"))
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParseResult:
    """What parsing returned: the model (if usable) and every finding."""

    mud: MudFile | None
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when the file is usable: a model and no errors."""
        return self.mud is not None and not self.errors

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Only the findings that make the file unusable."""
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """Findings that do not stop the file from being used."""
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)


def _acl_json(acl: Acl) -> dict[str, object]:
    aces = [{"name": ace.name, "matches": _matches_json(ace.matches),
             "actions": {"forwarding": ace.action.value}} for ace in acl.aces]
    return {"name": acl.name, "type": acl.type.value, "aces": {"ace": aces}}


def _drop_none(pairs: dict[str, object | None]) -> dict[str, object]:
    return {key: value for key, value in pairs.items() if value is not None}


def _port_json(port: PortMatch) -> dict[str, object]:
    if port.operator is PortOperator.RANGE:
        return {"lower-port": port.lower, "upper-port": port.upper}
    return {"operator": port.operator.value, "port": port.port}


def _matches_json(m: Matches) -> dict[str, object]:
    out: dict[str, object] = {}
    if m.ip is not None:
        fam = f"ipv{m.ip.version}"
        out[fam] = _drop_none({
            "protocol": m.ip.protocol, "dscp": m.ip.dscp, "ecn": m.ip.ecn, "ttl": m.ip.ttl,
            "length": m.ip.length, "flow-label": m.ip.flow_label,
            f"source-{fam}-network": m.ip.src_network,
            f"destination-{fam}-network": m.ip.dst_network,
            "ietf-acldns:src-dnsname": m.ip.src_dnsname,
            "ietf-acldns:dst-dnsname": m.ip.dst_dnsname,
        })
    if m.transport is not None:
        t = m.transport
        out["tcp" if t.protocol == 6 else "udp"] = _drop_none({
            "source-port": _port_json(t.src_port) if t.src_port else None,
            "destination-port": _port_json(t.dst_port) if t.dst_port else None,
            "ietf-mud:direction-initiated": t.direction_initiated.value
            if t.direction_initiated else None,
        })
    if m.icmp is not None:
        out["icmp"] = _drop_none({"type": m.icmp.type, "code": m.icmp.code})
    if m.eth is not None:
        e = m.eth
        out["eth"] = _drop_none({
            "source-mac-address": e.src_mac, "source-mac-address-mask": e.src_mac_mask,
            "destination-mac-address": e.dst_mac,
            "destination-mac-address-mask": e.dst_mac_mask, "ethertype": e.ethertype,
        })
    for container, key, text in m.unenforced:
        inner = out.setdefault(container, {}) if container else out
        assert isinstance(inner, dict)
        inner[key] = json.loads(text)
    if m.tls_profiles:
        from mudguard.mud.tls_profile import CLIENT_PROFILES_KEY, client_profiles_json

        out[CLIENT_PROFILES_KEY] = client_profiles_json(m.tls_profiles)
    if m.mud is not None:
        u = m.mud
        empty = [None]
        out["ietf-mud:mud"] = _drop_none({
            "manufacturer": u.manufacturer, "model": u.model, "controller": u.controller,
            "same-manufacturer": empty if u.same_manufacturer else None,
            "local-networks": empty if u.local_networks else None,
            "my-controller": empty if u.my_controller else None,
        })
    return out


TLS_SUPPORTED_MEMBER = "ietf-mud-tls:is-tls-dtls-profile-supported"
"""RFC 9761 §5.4: module ``ietf-mud-tls`` augments ``/ietf-mud:mud`` with this boolean."""

QUARANTINE_MODULE = "ietf-mud-quarantine"
QUARANTINE_MEMBER = "ietf-mud-quarantine:quaranteed-device-policy"
"""draft-richardson-shg-mud-quarantined-access-02: module ``ietf-mud-quarantine``
augments ``/ietf-mud:mud`` with container ``quaranteed-device-policy`` (sic), holding
list ``enabled-ace-names`` keyed by leaf ``ace-name`` (a leafref to an ACE's name)."""


def quarantine_json(names: tuple[str, ...]) -> dict[str, object]:
    """The ``quaranteed-device-policy`` container (RFC 7951 JSON) enabling ``names``."""
    return {"enabled-ace-names": [{"ace-name": name} for name in names]}
