"""The knowledge base and the OUI registry, as pure data structures.

``KnowledgeBase.from_mapping`` compiles the JSON knowledge (``knowledge.json`` in
this package) into matchers; ``OuiRegistry.from_manuf`` reads Wireshark's
``manuf`` file text (the IEEE MA-L/MA-M/MA-S registries, maintained by the
Wireshark project and shipped by Debian's ``libwireshark-data``). Loading the
files is the adapter's job (``identify.capture``); nothing here does I/O.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mudguard.identify.registry import DiscoveryRegistry

DOMAIN_FIELDS = frozenset({"dns_name", "sni", "http_host", "cert_cn"})
PORT_FIELDS = frozenset({"served_port", "peer_port"})
"""A maker's local-protocol port: the device answering from it, or a peer talking to it."""
PEER_PORT_SHARE = 0.6  # a peer's packet to a port says less than the device's own answer
PORT_FORMAT = re.compile(r"^(tcp|udp)/([1-9][0-9]{0,4})$")
NAME_FIELDS = frozenset({"hostname", "mdns_instance", "mdns_host", "lldp_name"})
"""Names a device gives itself: the ``hostname`` rules apply to each."""
ATTRIBUTES = ("manufacturer", "kind", "model", "platform")


class KnowledgeError(ValueError):
    """The knowledge base is malformed (a bug in the shipped data, or a bad override)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One thing a clue says: ``attribute`` (manufacturer, kind, model, platform) is
    ``value``, with this ``weight`` (0..1)."""

    attribute: str
    value: str
    weight: float


@dataclass(frozen=True, slots=True)
class Rule:
    """A regular expression over some clue fields and what a match claims."""

    fields: frozenset[str]
    pattern: re.Pattern[str]
    claims: tuple[tuple[str, str], ...]  # (attribute, value); model/maker may come from
    # the match's named groups ``model`` and ``maker``
    weight: float | None


@dataclass(frozen=True, slots=True)
class DomainRule:
    """A DNS suffix and what asking for a name under it claims."""

    suffix: str
    claims: tuple[tuple[str, str], ...]
    weight: float | None


@dataclass(frozen=True)
class KnowledgeBase:
    """Compiled knowledge: rules, domains, OUI name mappings, makers' product ranges."""

    kinds: frozenset[str]
    trusted_kinds: frozenset[str]
    source_weights: Mapping[str, float]
    rules: tuple[Rule, ...]
    domains: Mapping[str, DomainRule]
    platform_ouis: tuple[tuple[re.Pattern[str], str], ...]
    oui_makers: tuple[tuple[re.Pattern[str], tuple[tuple[str, str], ...]], ...]
    maker_ranges: Mapping[str, Mapping[str, float]]
    traffic: Mapping[str, float] = field(default_factory=dict)
    hap_categories: Mapping[int, tuple[str, float, str]] = field(default_factory=dict)
    """HomeKit accessory category → (kind, weight, category name)."""
    service_ports: Mapping[str, DomainRule] = field(default_factory=dict)
    """``tcp/N``/``udp/N`` → what a device serving that port claims (``suffix`` holds
    the port)."""
    discovery: DiscoveryRegistry | None = None
    """Home Assistant's discovery matchers (``identify.registry``), when loaded."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any],
                     discovery: DiscoveryRegistry | None = None) -> KnowledgeBase:
        """Compile the JSON knowledge (with the discovery registry, if any); raise
        ``KnowledgeError`` when it is malformed."""
        try:
            kinds = frozenset(str(k) for k in data["kinds"])
            rules = tuple(_rule(raw, kinds) for raw in data["rules"])
            domains = {str(raw["suffix"]).lower(): DomainRule(
                str(raw["suffix"]).lower(), _claims(raw, kinds), _weight(raw))
                for raw in data["domains"]}
            platform_ouis = tuple((re.compile(raw["re"], re.I), str(raw["platform"]))
                                  for raw in data["platform_ouis"])
            oui_makers = tuple((re.compile(raw["re"], re.I), _claims(raw, kinds))
                               for raw in data["oui_makers"])
            ranges = {str(maker): {str(k): float(v) for k, v in spread.items()}
                      for maker, spread in data["maker_ranges"].items()
                      if not maker.startswith("_")}
            for spread in ranges.values():
                _check_kinds(spread, kinds)
            hap = {int(code): (str(raw["kind"]), float(raw["weight"]), str(raw["category"]))
                   for code, raw in data.get("hap_categories", {}).items()
                   if not code.startswith("_")}
            _check_kinds({kind: 0.0 for kind, _, _ in hap.values()}, kinds)
            ports = {_port(raw["port"]): DomainRule(_port(raw["port"]), _claims(raw, kinds),
                                                    _weight(raw))
                     for raw in data.get("service_ports", ())}
            return cls(kinds=kinds, trusted_kinds=frozenset(data["trusted_kinds"]),
                       source_weights={str(k): float(v)
                                       for k, v in data["source_weights"].items()
                                       if not k.startswith("_")},
                       rules=rules, domains=domains, platform_ouis=platform_ouis,
                       oui_makers=oui_makers, maker_ranges=ranges,
                       traffic={str(k): float(v) for k, v in data["traffic"].items()
                                if not k.startswith("_")},
                       hap_categories=hap, service_ports=ports, discovery=discovery)
        except (KeyError, TypeError, AttributeError, ValueError, re.error) as exc:
            raise KnowledgeError(f"knowledge base is malformed: {exc!r}") from None

    def match(self, field_name: str, value: str) -> list[Claim]:
        """The claims a clue ``field_name = value`` makes."""
        default = self.source_weights.get(field_name, 0.5)
        out: list[Claim] = []
        if field_name in DOMAIN_FIELDS:
            domain = self._domain(value)
            if domain is not None:
                weight = default if domain.weight is None else domain.weight
                out += [Claim(a, v, weight) for a, v in domain.claims]
        if field_name in PORT_FIELDS:
            port = self.service_ports.get(value)
            if port is not None:
                weight = default if port.weight is None else port.weight
                if field_name == "peer_port":
                    weight *= PEER_PORT_SHARE
                out += [Claim(a, v, weight) for a, v in port.claims]
            return out
        for rule in self.rules:
            if field_name not in rule.fields and not (
                    field_name in NAME_FIELDS and "hostname" in rule.fields):
                continue
            found = rule.pattern.search(value)
            if found is None:
                continue
            weight = default if rule.weight is None else rule.weight
            out += [Claim(a, v, weight) for a, v in rule.claims]
            groups = found.groupdict()
            if groups.get("model"):
                out.append(Claim("model", groups["model"].strip()[:64], weight))
            if groups.get("maker"):  # the device names its maker (a UPnP description)
                out.append(Claim("manufacturer", groups["maker"].strip()[:64], weight))
        return out

    def _domain(self, name: str) -> DomainRule | None:
        labels = name.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):  # longest suffix first
            rule = self.domains.get(".".join(labels[i:]))
            if rule is not None:
                return rule
        return None

    def oui_claims(self, organisation: str) -> tuple[str | None, list[Claim]]:
        """What an OUI's registered organisation says: ``(platform, claims)``. A
        module or chip maker is a platform, not the device's maker."""
        weight = self.source_weights.get("oui", 0.5)
        for pattern, platform in self.platform_ouis:
            if pattern.search(organisation):
                return platform, [Claim("kind", "iot", 0.2)]
        for pattern, claims in self.oui_makers:
            if pattern.search(organisation):
                return None, [Claim(a, v, weight if a == "manufacturer" else weight * 0.6)
                              for a, v in claims]
        return None, [Claim("manufacturer", short_organisation(organisation), weight * 0.8)]


_SUFFIXES = re.compile(r"[,.]?\s*\b(co|corp|corporation|inc|incorporated|ltd|limited|llc|"
                       r"gmbh|ag|sa|s\.a|bv|b\.v|pty|plc|company|technology|technologies|"
                       r"electronics|trading|division|manufacturing|international)\b\.?",
                       re.I)


def short_organisation(name: str) -> str:
    """A registry organisation without its legal suffixes: ``Foo Technologies Co.,
    Ltd.`` → ``Foo``."""
    short = _SUFFIXES.sub("", name)
    short = re.sub(r"[\s,.]+$", "", re.sub(r"\s{2,}", " ", short)).strip()
    return short or name.strip()


def _check_kinds(spread: Mapping[str, float], kinds: frozenset[str]) -> None:
    unknown = set(spread) - kinds
    if unknown:
        raise KnowledgeError(f"unknown kinds {sorted(unknown)}")


def _claims(raw: Mapping[str, Any], kinds: frozenset[str]) -> tuple[tuple[str, str], ...]:
    claims = tuple((a, str(raw[a])) for a in ATTRIBUTES if a in raw)
    for attribute, value in claims:
        if attribute == "kind" and value not in kinds:
            raise KnowledgeError(f"unknown kind {value!r}")
    return claims


def _weight(raw: Mapping[str, Any]) -> float | None:
    return None if raw.get("weight") is None else float(raw["weight"])


def port_numbers(ports: Iterable[str]) -> frozenset[int]:
    """The numbers of ``tcp/N``/``udp/N`` service ports: a cheap first test per packet or
    connection before a port's text is made."""
    return frozenset(int(port.split("/")[1]) for port in ports)


def _port(raw: object) -> str:
    text = str(raw)
    found = PORT_FORMAT.match(text)
    if found is None or int(found.group(2)) > 65535:
        raise KnowledgeError(f"bad service port {text!r} (tcp/N or udp/N)")
    return text


def _rule(raw: Mapping[str, Any], kinds: frozenset[str]) -> Rule:
    return Rule(fields=frozenset(raw["fields"]), pattern=re.compile(raw["re"], re.I),
                claims=_claims(raw, kinds), weight=_weight(raw))


_OUI_BITS = (36, 28, 24)  # longest first: a MA-S or MA-M block inside a MA-L one


@dataclass(frozen=True)
class OuiRegistry:
    """MAC prefixes (24, 28 or 36 bits) → registered organisation.

    Held compactly (the Wireshark file has ~52,000 prefixes and ~30,000 distinct
    organisations; a dict of tuples and strings took ~10 MB of the daemon's memory):
    per prefix length, a sorted ``array`` of prefix values and a parallel array of
    organisation numbers; the distinct organisations are one UTF-8 blob cut by offsets.
    """

    tables: Mapping[int, tuple[array[int], array[int]]]  # bits → (sorted prefixes, names)
    names: bytes  # the distinct organisations, UTF-8, back to back
    name_ends: array[int]  # name i is names[name_ends[i - 1]:name_ends[i]] (0 for i = 0)

    @classmethod
    def from_manuf(cls, text: str) -> OuiRegistry:
        """Parse Wireshark's ``manuf`` format: ``AA:BB:CC<tab>short<tab>long name``,
        with ``/28`` or ``/36`` after longer prefixes; comments start with ``#``."""
        return cls.from_manuf_lines(text.splitlines())

    @classmethod
    def from_manuf_lines(cls, lines: Iterable[str]) -> OuiRegistry:
        """``from_manuf`` over lines as they come (an open file: the whole text is never
        held); a prefix listed twice keeps its last organisation."""
        numbers: dict[str, int] = {}  # organisation → its number
        blob = bytearray()
        ends = array("I")
        per_bits: dict[int, dict[int, int]] = {bits: {} for bits in _OUI_BITS}
        for line in lines:
            if not line or line.startswith("#"):
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 2:
                continue
            prefix, _, bits_text = parts[0].partition("/")
            digits = prefix.replace(":", "").replace("-", "").replace(".", "")
            try:
                value = int(digits, 16)
                bits = int(bits_text) if bits_text else len(digits) * 4
            except ValueError:
                continue
            if bits not in per_bits or len(digits) * 4 < bits:
                continue
            name = (parts[2] if len(parts) > 2 else parts[1]).strip()
            number = numbers.get(name)
            if number is None:
                number = numbers[name] = len(ends)
                blob += name.encode("utf-8")
                ends.append(len(blob))
            per_bits[bits][value >> (len(digits) * 4 - bits)] = number
        tables = {}
        for bits, found in per_bits.items():
            values = sorted(found)
            tables[bits] = (array("Q", values), array("I", [found[v] for v in values]))
        return cls(tables, bytes(blob), ends)

    def __len__(self) -> int:
        """How many prefixes are registered."""
        return sum(len(values) for values, _ in self.tables.values())

    def organisation(self, mac: bytes) -> str | None:
        """The organisation registered for the MAC's prefix (longest first)."""
        number = int.from_bytes(mac[:6], "big")
        for bits in _OUI_BITS:
            values, names = self.tables[bits]
            wanted = number >> (48 - bits)
            i = bisect_left(values, wanted)
            if i < len(values) and values[i] == wanted:
                n = names[i]
                return self.names[self.name_ends[n - 1] if n else 0:self.name_ends[n]].decode()
        return None


def is_locally_administered(mac: bytes) -> bool:
    """The U/L bit: a MAC the device made up (randomised), which has no OUI."""
    return bool(mac[0] & 0x02)
