"""The knowledge base and the OUI registry, as pure data structures.

``KnowledgeBase.from_mapping`` compiles the JSON knowledge (``knowledge.json`` in
this package) into matchers; ``OuiRegistry.from_manuf`` reads Wireshark's
``manuf`` file text (the IEEE MA-L/MA-M/MA-S registries, maintained by the
Wireshark project and shipped by Debian's ``libwireshark-data``). Loading the
files is the adapter's job (``identify.capture``); nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mudguard.identify.registry import DiscoveryRegistry

DOMAIN_FIELDS = frozenset({"dns_name", "sni", "http_host", "cert_cn"})
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
            return cls(kinds=kinds, trusted_kinds=frozenset(data["trusted_kinds"]),
                       source_weights={str(k): float(v)
                                       for k, v in data["source_weights"].items()
                                       if not k.startswith("_")},
                       rules=rules, domains=domains, platform_ouis=platform_ouis,
                       oui_makers=oui_makers, maker_ranges=ranges,
                       traffic={str(k): float(v) for k, v in data["traffic"].items()
                                if not k.startswith("_")},
                       hap_categories=hap, discovery=discovery)
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


def _rule(raw: Mapping[str, Any], kinds: frozenset[str]) -> Rule:
    return Rule(fields=frozenset(raw["fields"]), pattern=re.compile(raw["re"], re.I),
                claims=_claims(raw, kinds), weight=_weight(raw))


@dataclass(frozen=True)
class OuiRegistry:
    """MAC prefixes (24, 28 or 36 bits) → registered organisation."""

    prefixes: Mapping[tuple[int, int], str]  # (bits, prefix value) → organisation

    @classmethod
    def from_manuf(cls, text: str) -> OuiRegistry:
        """Parse Wireshark's ``manuf`` format: ``AA:BB:CC<tab>short<tab>long name``,
        with ``/28`` or ``/36`` after longer prefixes; comments start with ``#``."""
        prefixes: dict[tuple[int, int], str] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            prefix, _, bits_text = parts[0].partition("/")
            digits = prefix.replace(":", "").replace("-", "").replace(".", "")
            try:
                value = int(digits, 16)
                bits = int(bits_text) if bits_text else len(digits) * 4
            except ValueError:
                continue
            if bits not in (24, 28, 36) or len(digits) * 4 < bits:
                continue
            value >>= len(digits) * 4 - bits
            prefixes[(bits, value)] = (parts[2] if len(parts) > 2 else parts[1]).strip()
        return cls(prefixes)

    def organisation(self, mac: bytes) -> str | None:
        """The organisation registered for the MAC's prefix (longest first)."""
        number = int.from_bytes(mac[:6], "big")
        for bits in (36, 28, 24):
            name = self.prefixes.get((bits, number >> (48 - bits)))
            if name is not None:
                return name
        return None


def is_locally_administered(mac: bytes) -> bool:
    """The U/L bit: a MAC the device made up (randomised), which has no OUI."""
    return bool(mac[0] & 0x02)
