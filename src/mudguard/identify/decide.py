"""Decide what a device is from its clues: an explainable score, no I/O.

Theory of operation:

1. Each ``Clue`` (one fact one packet stated: a DHCP hostname, an mDNS service,
   a DNS name, …) is matched against the knowledge base, which turns it into
   ``Claim``s: *manufacturer is X*, *kind is Y*, *model is Z*, *platform is W*,
   each with a weight (how far one clue of that kind is trusted, 0..1).
   The MAC itself is a clue: its OUI names the maker, unless the registered
   organisation is a Wi-Fi module or chip maker (Espressif, Texas Instruments,
   Tuya, Murata, AzureWave, …): that names the *platform*, not the maker.
   A locally administered (randomised) MAC has no OUI and hints at a phone or
   computer, and so does talking to many different addresses and names.
   Home Assistant's discovery registry (``identify.registry``) reads the clues as a
   whole (DHCP hostname + MAC prefix, mDNS service + instance name + TXT, HomeKit
   model, SSDP) and claims the integration's maker, or its platform for a protocol
   or firmware (Google Cast, ESPHome, Tuya…). Its weights (``registry_*`` in
   ``source_weights``: 0.5-0.65) sit above an OUI alone (0.5) and below what a
   device says of itself explicitly (vendor class 0.7, mDNS TXT 0.9): a curated
   pattern that matched, not the device naming its maker. A registry MAC prefix
   and the IEEE OUI are one fact: the registry's maker replaces the OUI's maker
   claim, and a prefix the IEEE registry gives to a module maker names no maker;
   likewise a clue a hand-written rule already turned into the same maker (or
   platform) is not counted again through the registry.
   Standard protocol kinds that need more than one clue are claimed here too: the
   HomeKit accessory category (TXT ``ci`` of a device announcing ``_hap``, table
   ``hap_categories``) and Google Cast's ``ca`` capability bits (video out → TV,
   else audio out → speaker).
2. Per attribute, the claims for one value are combined as a noisy-or
   (``1 - Π(1 - w)``: two independent clues of 0.5 give 0.75). Manufacturer names
   that share their first word (``Philips`` and ``Philips Hue (Signify)``) are one
   maker, shown by its best-supported name. The value with
   the highest score wins; its confidence is that score times its share of all
   the attribute's support, so conflicting clues lower the confidence.
3. Once the maker is known, what that maker mostly makes (``maker_ranges``) is
   added as a weak claim on the kind (LIFX makes bulbs). The generic kind
   ``iot`` only wins when no clue names a specific kind.
4. The result names every clue that counted, with the packet it came from.

``confidence`` is the mean of the manufacturer's and the kind's confidences
(an unknown attribute counts 0): 0 means nothing is known.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mudguard.identify.knowledge import (
    Claim,
    KnowledgeBase,
    OuiRegistry,
    is_locally_administered,
)
from mudguard.identify.registry import registry_matches

SOURCES = {
    "hostname": "dhcp", "vendor_class": "dhcp", "prl": "dhcp",
    "mdns_service": "mdns", "mdns_instance": "mdns", "mdns_txt": "mdns", "mdns_query": "mdns",
    "mdns_host": "mdns",
    "ssdp_server": "ssdp", "ssdp_usn": "ssdp", "ssdp_type": "ssdp", "ssdp_search": "ssdp",
    "lldp_name": "lldp", "lldp_desc": "lldp", "dns_name": "dns", "sni": "tls_sni",
    "cert_org": "tls_certificate", "cert_cn": "tls_certificate",
    "user_agent": "http", "http_host": "http", "oui": "oui", "mac": "mac",
    "upnp_device_type": "upnp", "upnp_manufacturer": "upnp", "upnp_model": "upnp",
    "upnp_model_description": "upnp", "upnp_friendly_name": "upnp",
    "upnp_manufacturer_url": "upnp",
    "traffic": "traffic", "maker_range": "knowledge", "registry": "home_assistant_registry",
    "protocol": "mdns",
    "served_port": "port", "peer_port": "port", "http_server": "http",
    "device_maker": "local_api", "device_model": "local_api", "device_type": "local_api",
    "device_description": "local_api", "device_name": "local_api",
}
LABELS = {
    "hostname": "DHCP hostname (option 12/81)", "vendor_class": "DHCP vendor class (option 60)",
    "prl": "DHCP parameter request list (option 55)", "mdns_service": "mDNS announces service",
    "mdns_instance": "mDNS instance name", "mdns_txt": "mDNS TXT", "mdns_query": "mDNS asks for",
    "mdns_host": "mDNS host name",
    "ssdp_server": "SSDP SERVER", "ssdp_usn": "SSDP USN", "ssdp_type": "SSDP NT/ST",
    "ssdp_search": "SSDP M-SEARCH for", "lldp_name": "LLDP system name",
    "lldp_desc": "LLDP system description", "dns_name": "DNS query for",
    "sni": "TLS server name (SNI)", "cert_org": "server certificate organisation",
    "cert_cn": "server certificate name", "user_agent": "HTTP User-Agent",
    "http_host": "HTTP Host", "oui": "MAC OUI registered to", "mac": "MAC address",
    "upnp_device_type": "UPnP description deviceType",
    "upnp_manufacturer": "UPnP description manufacturer",
    "upnp_model": "UPnP description modelName",
    "upnp_model_description": "UPnP description modelDescription",
    "upnp_friendly_name": "UPnP description friendlyName",
    "upnp_manufacturer_url": "UPnP description manufacturerURL",
    "traffic": "traffic", "maker_range": "maker's product range",
    "registry": "Home Assistant discovery matcher", "protocol": "protocol-defined kind",
    "http_server": "its web server calls itself",
    "served_port": "answers on its port", "peer_port": "a device on the LAN talks to its port",
    "device_maker": "its local API names the maker",
    "device_model": "its local API names the model",
    "device_type": "its local API names the device type",
    "device_description": "its local API describes it as", "device_name": "its local API names it",
}
MAX_EVIDENCE = 48
GENERIC_KIND = "iot"
CAST_VIDEO_OUT, CAST_AUDIO_OUT = 0x1, 0x4  # Google Cast TXT "ca" capability bits


@dataclass(frozen=True, slots=True)
class Clue:
    """One fact one packet stated about the device (``packet`` is the frame number
    in the capture, 1-based; None for facts about the capture as a whole)."""

    field: str
    value: str
    packet: int | None = None


@dataclass(frozen=True, slots=True)
class TrafficSummary:
    """The device's own traffic over the capture."""

    packets_sent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    remote_addresses: int = 0
    dns_names: int = 0
    first_packet: int | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """A clue that counted, and what it supports."""

    source: str
    packet: int | None
    says: str
    supports: dict[str, str]
    weight: float
    field: str = ""  # the clue's field (``LABELS``' key) and value, for other languages
    value: str = ""

    def to_json(self) -> dict[str, Any]:
        """The evidence as a JSON object."""
        return {"source": self.source, "packet": self.packet, "says": self.says,
                "supports": self.supports, "weight": round(self.weight, 2)}


@dataclass(frozen=True, slots=True)
class Identification:
    """What the device is, how sure, and why."""

    mac: str
    manufacturer: str | None
    model: str | None
    kind: str | None
    platform: str | None
    confidence: float
    manufacturer_confidence: float
    kind_confidence: float
    trusted_candidate: bool
    kind_candidates: tuple[tuple[str, float], ...]
    evidence: tuple[Evidence, ...]

    def to_json(self) -> dict[str, Any]:
        """The identification as a JSON object (the CLI's contract)."""
        return {"mac": self.mac, "manufacturer": self.manufacturer, "model": self.model,
                "kind": self.kind, "platform": self.platform,
                "confidence": round(self.confidence, 2),
                "confidence_detail": {"manufacturer": round(self.manufacturer_confidence, 2),
                                      "kind": round(self.kind_confidence, 2)},
                "trusted_candidate": self.trusted_candidate,
                "kind_candidates": [{"kind": k, "score": s} for k, s in self.kind_candidates],
                "evidence": [e.to_json() for e in self.evidence]}


def identify(mac: bytes, clues: Iterable[Clue], kb: KnowledgeBase,
             oui: OuiRegistry | None = None,
             traffic: TrafficSummary | None = None) -> Identification:
    """Identify the device at ``mac`` from its clues (see the module docstring)."""
    scored: list[tuple[Clue, list[Claim]]] = []
    platform: str | None = None
    clues = list(clues)
    mac_claims = _mac_claims(mac, kb, oui)
    for _, claims in mac_claims:
        platform = next((c.value for c in claims if c.attribute == "platform"), platform)
    registry, names_mac_maker = _registry_claims(mac, clues, kb,
                                                 module_oui=platform is not None)
    if names_mac_maker:  # the registry knows this MAC prefix better than the IEEE name
        mac_claims = [(clue, [c for c in claims if c.attribute != "manufacturer"])
                      for clue, claims in mac_claims]
    scored += mac_claims + registry + _cast_claims(clues, kb) + _homekit_claims(clues, kb)
    seen: set[tuple[str, str]] = set()
    for clue in clues:
        if (clue.field, clue.value) in seen:
            continue
        seen.add((clue.field, clue.value))
        scored.append((clue, kb.match(clue.field, clue.value)))
    if traffic is not None:
        scored += _traffic_claims(traffic, kb)
    maker, maker_conf = _decide(_merge_makers(_claims_for(scored, "manufacturer")))
    platform = _decide(_claims_for(scored, "platform"))[0] or platform
    scored += _range_claims(kb, maker, maker_conf, platform)
    kind_claims = _claims_for(scored, "kind")
    kind, kind_conf = _decide_kind(kind_claims)
    model, _ = _decide(_claims_for(scored, "model"))
    return Identification(
        mac=":".join(f"{b:02x}" for b in mac), manufacturer=maker, model=model, kind=kind,
        platform=platform, confidence=(maker_conf + kind_conf) / 2,
        manufacturer_confidence=maker_conf, kind_confidence=kind_conf,
        trusted_candidate=kind in kb.trusted_kinds,
        kind_candidates=tuple(candidates(kind_claims)),
        evidence=tuple(_evidence(scored)))


def _mac_claims(mac: bytes, kb: KnowledgeBase,
                oui: OuiRegistry | None) -> list[tuple[Clue, list[Claim]]]:
    if is_locally_administered(mac):
        return [(Clue("mac", "locally administered (randomised): no OUI"),
                 [Claim("kind", "phone", 0.35), Claim("kind", "computer", 0.25)])]
    organisation = oui.organisation(mac) if oui is not None else None
    if organisation is None:
        return []
    platform, claims = kb.oui_claims(organisation)
    if platform is not None:
        claims = [Claim("platform", platform, kb.source_weights.get("oui", 0.5)), *claims]
    return [(Clue("oui", organisation), claims)]


def _registry_claims(mac: bytes, clues: Sequence[Clue], kb: KnowledgeBase, *,
                     module_oui: bool) -> tuple[list[tuple[Clue, list[Claim]]], bool]:
    """Home Assistant's matches, as clues (a MAC-prefix-only match has no frame), and
    whether one that rests on the MAC prefix names a maker."""
    if kb.discovery is None:
        return [], False
    out: list[tuple[Clue, list[Claim]]] = []
    names_mac_maker = False
    for match in registry_matches(kb.discovery, mac,
                                  [(c.field, c.value, c.packet) for c in clues],
                                  kb.source_weights):
        if match.from_mac_only and module_oui:
            continue  # the prefix belongs to a Wi-Fi module maker
        # a clue a hand-written rule already turned into the same claim counts once
        counted = {(c.attribute, maker_key(c.value)) for field_name, value in match.basis
                   for c in kb.match(field_name, value)}
        claims = [c for c in match.claims if (c.attribute, maker_key(c.value)) not in counted]
        if match.rests_on_mac and any(c.attribute == "manufacturer" for c in claims):
            names_mac_maker = True
        out.append((Clue("registry", match.says, match.packet), claims))
    return out, names_mac_maker


def _cast_claims(clues: Sequence[Clue], kb: KnowledgeBase) -> list[tuple[Clue, list[Claim]]]:
    """Google Cast's capability bits (TXT ``ca`` of ``_googlecast._tcp``): video out is
    a TV or a TV's dongle, audio out only is a speaker."""
    if not any(c.field == "mdns_service" and c.value.lower() == "_googlecast._tcp"
               for c in clues):
        return []
    weight = kb.source_weights.get("protocol", 0.7)
    for clue in clues:
        key, _, value = clue.value.partition("=")
        if clue.field != "mdns_txt" or key.lower() != "ca" or not value.isascii() \
                or not value.isdigit() or len(value) > 10:
            continue
        bits = int(value)
        kind = ("tv" if bits & CAST_VIDEO_OUT else
                "speaker" if bits & CAST_AUDIO_OUT else None)
        if kind is None:
            return []
        return [(Clue("protocol", f"Google Cast capabilities ca={bits} "
                                  f"({'video' if kind == 'tv' else 'audio only'} out)",
                      clue.packet), [Claim("kind", kind, weight)])]
    return []


def _homekit_claims(clues: Sequence[Clue],
                    kb: KnowledgeBase) -> list[tuple[Clue, list[Claim]]]:
    """The HomeKit accessory category (TXT ``ci`` of a ``_hap`` service) as a kind."""
    if not any(c.field == "mdns_service" and c.value.lower() in ("_hap._tcp", "_hap._udp")
               for c in clues):
        return []
    for clue in clues:
        key, _, value = clue.value.partition("=")
        if clue.field != "mdns_txt" or key.lower() != "ci" or not value.isascii() \
                or not value.isdigit() or len(value) > 3:
            continue
        known = kb.hap_categories.get(int(value))
        if known is None:
            return []
        kind, weight, name = known
        return [(Clue("protocol", f"HomeKit accessory category ci={value} ({name})",
                      clue.packet), [Claim("kind", kind, weight)])]
    return []


def _traffic_claims(traffic: TrafficSummary,
                    kb: KnowledgeBase) -> list[tuple[Clue, list[Claim]]]:
    limits, weight = kb.traffic, kb.source_weights.get("traffic", 0.4)
    out: list[tuple[Clue, list[Claim]]] = []
    seconds = max(traffic.seconds, 1e-9)
    upstream = traffic.bytes_sent / seconds
    total = traffic.bytes_sent + traffic.bytes_received
    if (traffic.seconds >= limits.get("camera_min_seconds", 300)
            and upstream >= limits.get("camera_upstream_bytes_per_s", 500)
            and traffic.packets_sent / seconds >= limits.get("camera_upstream_packets_per_s", 1)
            and total and traffic.bytes_sent / total >= limits.get("camera_upstream_share", 0.6)):
        out.append((Clue("traffic", f"keeps sending {upstream:.0f} B/s, "
                                    f"{traffic.packets_sent / seconds:.1f} packets/s, "
                                    f"{traffic.bytes_sent / total:.0%} of its bytes upstream "
                                    f"for {traffic.seconds:.0f} s (a camera's uploads)",
                         traffic.first_packet), [Claim("kind", "camera", weight)]))
    if (traffic.remote_addresses >= limits.get("many_remote_addresses", 40)
            or traffic.dns_names >= limits.get("many_dns_names", 25)):
        out.append((Clue("traffic", f"talks to {traffic.remote_addresses} remote addresses "
                                    f"and asks for {traffic.dns_names} names",
                         traffic.first_packet),
                    [Claim("kind", "phone", weight * 0.8), Claim("kind", "computer", weight)]))
    return out


def _range_claims(kb: KnowledgeBase, maker: str | None, maker_conf: float,
                  platform: str | None) -> list[tuple[Clue, list[Claim]]]:
    weight = kb.source_weights.get("maker_range", 0.35)
    out: list[tuple[Clue, list[Claim]]] = []
    for name, scale in ((maker, maker_conf), (platform, 0.5)):
        spread = kb.maker_ranges.get(name or "")
        if spread and scale > 0:
            text = ", ".join(f"{k} {v:.0%}" for k, v in sorted(spread.items(),
                                                                 key=lambda kv: -kv[1]))
            out.append((Clue("maker_range", f"{name} makes {text}"),
                        [Claim("kind", k, weight * share * min(1.0, scale * 1.5))
                         for k, share in spread.items()]))
    return out


def _claims_for(scored: Sequence[tuple[Clue, list[Claim]]], attribute: str) -> list[Claim]:
    return [c for _, claims in scored for c in claims if c.attribute == attribute and c.weight > 0]


def maker_key(name: str) -> str:
    """What two names of one maker share: the first word, lower case (``Philips Hue
    (Signify)`` and ``Philips`` → ``philips``)."""
    word = name.strip().split(" ")[0].strip("(),.").lower()
    return word or name.lower()


def _merge_makers(claims: Sequence[Claim]) -> list[Claim]:
    """Manufacturer claims with the names of one maker made one (its name with the
    most support)."""
    support: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for claim in claims:
        support[maker_key(claim.value)][claim.value] += claim.weight
    best = {key: max(names, key=lambda n: (names[n], -len(n)))
            for key, names in support.items()}
    return [Claim(c.attribute, best[maker_key(c.value)], c.weight) for c in claims]


def _decide(claims: Sequence[Claim]) -> tuple[str | None, float]:
    """The best-supported value and its confidence (noisy-or × share of support)."""
    if not claims:
        return None, 0.0
    miss: dict[str, float] = defaultdict(lambda: 1.0)
    total: dict[str, float] = defaultdict(float)
    for claim in claims:
        key = claim.value
        miss[key] *= 1.0 - min(claim.weight, 0.99)
        total[key] += claim.weight
    ranked = sorted(miss, key=lambda v: (miss[v], -total[v]))
    best = ranked[0]
    if len(ranked) > 1 and abs(miss[ranked[1]] - miss[best]) < 1e-9:
        return None, 0.0  # a tie: the clues cannot tell (see the candidates)
    share = total[best] / sum(total.values())
    return best, (1.0 - miss[best]) * share


def candidates(claims: Sequence[Claim], limit: int = 3) -> list[tuple[str, float]]:
    """The best-supported values with their noisy-or scores, best first."""
    miss: dict[str, float] = defaultdict(lambda: 1.0)
    for claim in claims:
        miss[claim.value] *= 1.0 - min(claim.weight, 0.99)
    ranked = sorted(miss.items(), key=lambda kv: kv[1])[:limit]
    return [(value, round(1.0 - m, 2)) for value, m in ranked]


def _decide_kind(claims: Sequence[Claim]) -> tuple[str | None, float]:
    specific = [c for c in claims if c.value != GENERIC_KIND]
    if specific:
        return _decide(specific)
    kind, conf = _decide(claims)
    return kind, conf * 0.5


def _evidence(scored: Sequence[tuple[Clue, list[Claim]]]) -> Iterable[Evidence]:
    count = 0
    for clue, claims in scored:
        if not claims and clue.field not in ("hostname", "vendor_class", "oui", "mdns_host",
                                             "user_agent", "lldp_name", "ssdp_server"):
            continue
        supports: dict[str, str] = {}
        for claim in sorted(claims, key=lambda c: -c.weight):
            supports.setdefault(claim.attribute, claim.value)
        yield Evidence(source=SOURCES.get(clue.field, clue.field), packet=clue.packet,
                       says=f"{LABELS.get(clue.field, clue.field)} \"{clue.value}\"",
                       supports=supports,
                       weight=max((c.weight for c in claims), default=0.0),
                       field=clue.field, value=clue.value)
        count += 1
        if count >= MAX_EVIDENCE:
            return
