"""Home Assistant's discovery matchers as identification evidence (pure, no I/O).

``discovery_registry.json`` (built by ``registry_import`` from a Home Assistant
wheel, Apache-2.0) holds, per integration, the DHCP hostname patterns and MAC
prefixes, mDNS service types with instance-name and TXT matchers, HomeKit models
and SSDP matchers Home Assistant uses to recognise devices. A match names the
integration's maker (its brand where it belongs to one), or, for an integration
named after a protocol or firmware (Google Cast, ESPHome, Tuya, DLNA, …), the
*platform*: never the maker.

Matching follows Home Assistant's semantics, on the device's clues as a whole:

- DHCP: every field a matcher gives must match: the host name (shell-style
  pattern, case-insensitive; the DHCP hostname, or the mDNS host name the device
  gives itself, as knowledge.json's hostname rules read both) and the MAC prefix.
  A matcher that gives only a MAC prefix names the maker from the MAC alone, as a
  registry-curated OUI: it replaces the IEEE organisation's maker claim rather
  than adding to it (one fact, the MAC), and is ignored when the IEEE registry
  names a Wi-Fi module maker for that prefix. A prefix that comes with a hostname
  pattern is never enough on its own (Home Assistant pairs them because the
  prefix is shared: E0:76:D0 is AMPAK's, a module maker, and August's locks use it).
- mDNS: the service type is announced, and the instance name
  (``<instance>.<type>.local.``) and each TXT property match their patterns.
  TXT strings are the device's, not tied to one service.
- HomeKit: the device announces ``_hap._tcp``/``_hap._udp`` with TXT ``md=``;
  the model is looked up whole, then its first word, then before its first
  ``-``, then against the wildcard models.
- SSDP: ``st``/``nt``/``deviceType`` against the NT/ST of an announcement (or a
  device description's deviceType), ``manufacturer``/``modelName``/… against a
  device description, when one was seen.

Patterns are shell-style (``*``, ``?``, ``[...]``) and matched by ``glob_match``,
which compiles nothing and runs in at most len(pattern) × len(text) steps; the
patterns come from the shipped file (checked when loaded), the texts from devices
(capped by the parsers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mudguard.identify.knowledge import Claim, KnowledgeError

MAX_PATTERN = 80
MAX_TEXT = 256  # characters of a device's text compared (the parsers cap at 128)
WEIGHT_KEYS = {"dhcp": "registry_dhcp", "hostname": "registry_hostname",
               "mac": "registry_mac", "zeroconf": "registry_zeroconf",
               "zeroconf_type": "registry_zeroconf_type", "homekit": "registry_homekit",
               "ssdp": "registry_ssdp"}
DEFAULT_WEIGHTS = {"registry_dhcp": 0.65, "registry_hostname": 0.5, "registry_mac": 0.55,
                   "registry_zeroconf": 0.65, "registry_zeroconf_type": 0.6,
                   "registry_homekit": 0.65, "registry_ssdp": 0.6}
SSDP_FIELDS = {"st": ("ssdp_type",), "nt": ("ssdp_type",),
               "deviceType": ("ssdp_type", "upnp_device_type"),
               "manufacturer": ("upnp_manufacturer",), "modelName": ("upnp_model",),
               "modelDescription": ("upnp_model_description",),
               "friendlyName": ("upnp_friendly_name",),
               "manufacturerURL": ("upnp_manufacturer_url",)}
HAP_SERVICES = ("_hap._tcp", "_hap._udp")
HOST_FIELDS = ("hostname", "mdns_host")
"""Names a device gives itself that the DHCP hostname patterns read (as the knowledge
base's hostname rules read both)."""
Basis = tuple[tuple[str, str], ...]
Adder = Callable[[str, str, str, "int | None", Basis], None]
"""``add(kind of clue, integration, what matched, first frame, the clues it rests on)``."""


def _tokens(pattern: str) -> tuple[tuple[str, str, bool], ...]:
    """A shell pattern as tokens ``(kind, chars, negated)``: ``*``, ``?``, a
    character set (ranges expanded), or one literal character."""
    out: list[tuple[str, str, bool]] = []
    pos = 0
    while pos < len(pattern):
        char = pattern[pos]
        if char in "*?":
            if not (char == "*" and out and out[-1][0] == "*"):
                out.append((char, "", False))
            pos += 1
            continue
        if char == "[":
            end = pattern.find("]", pos + 2)
            if end > 0:
                body = pattern[pos + 1:end]
                negated = body.startswith("!")
                out.append(("set", _expand(body[1:] if negated else body), negated))
                pos = end + 1
                continue
        out.append(("lit", char, False))
        pos += 1
    return tuple(out)


def _expand(body: str) -> str:
    chars: list[str] = []
    pos = 0
    while pos < len(body):
        if (pos + 2 < len(body) and body[pos + 1] == "-"
                and 0 <= ord(body[pos + 2]) - ord(body[pos]) < 64):
            chars += [chr(c) for c in range(ord(body[pos]), ord(body[pos + 2]) + 1)]
            pos += 3
        else:
            chars.append(body[pos])
            pos += 1
    return "".join(chars)


def _one(token: tuple[str, str, bool], char: str) -> bool:
    kind, chars, negated = token
    if kind == "?":
        return True
    if kind == "set":
        return (char in chars) != negated
    return char == chars


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled shell-style pattern (``*``, ``?``, ``[...]``, ``[!...]``),
    case-insensitive, anchored at both ends like ``fnmatch``."""

    text: str
    tokens: tuple[tuple[str, str, bool], ...]
    prefix: str  # the literal characters the pattern starts with
    literal: bool  # no wildcard at all: the text must equal the prefix

    @classmethod
    def parse(cls, pattern: str) -> Glob:
        """Check and compile a pattern from the shipped registry."""
        if not 0 < len(pattern) <= MAX_PATTERN or not pattern.isprintable():
            raise KnowledgeError(f"bad registry pattern {pattern!r}")
        tokens = _tokens(pattern.lower())
        lead = 0
        while lead < len(tokens) and tokens[lead][0] == "lit":
            lead += 1
        return cls(pattern, tokens, "".join(t[1] for t in tokens[:lead]),
                   lead == len(tokens))

    def match(self, text: str) -> bool:
        """Whether the whole of ``text`` matches (the classic one-star-backtrack walk:
        at most len(tokens) × len(text) steps, after a check of the literal start)."""
        value = text[:MAX_TEXT].lower()
        if not value.startswith(self.prefix):
            return False
        if self.literal:
            return len(value) == len(self.prefix)
        tokens = self.tokens
        t = v = 0
        star_t, star_v = -1, 0
        while v < len(value):
            if t < len(tokens) and tokens[t][0] == "*":
                star_t, star_v = t, v
                t += 1
            elif t < len(tokens) and _one(tokens[t], value[v]):
                t += 1
                v += 1
            elif star_t >= 0:
                star_v += 1
                t, v = star_t + 1, star_v
            else:
                return False
        while t < len(tokens) and tokens[t][0] == "*":
            t += 1
        return t == len(tokens)


def glob_match(pattern: str, text: str) -> bool:
    """Whether ``text`` matches the shell-style ``pattern`` (case-insensitive)."""
    return Glob.parse(pattern).match(text)


@dataclass(frozen=True, slots=True)
class Integration:
    """What a match on one Home Assistant integration names."""

    name: str
    maker: str | None
    platform: str | None


@dataclass(frozen=True, slots=True)
class DhcpMatcher:
    """A DHCP matcher: hostname pattern and/or MAC prefix (hex digits)."""

    domain: str
    hostname: Glob | None
    mac_prefix: str | None


@dataclass(frozen=True, slots=True)
class ZeroconfMatcher:
    """An mDNS matcher for one service type: instance-name and TXT patterns."""

    domain: str
    name: Glob | None
    properties: tuple[tuple[str, Glob], ...]


@dataclass(frozen=True, slots=True)
class SsdpMatcher:
    """An SSDP matcher: every key's pattern must match."""

    domain: str
    keys: tuple[tuple[str, Glob], ...]


@dataclass(frozen=True, slots=True)
class RegistryMatch:
    """One registry match: what it says (for the evidence), the first frame of the
    clues it rests on, and what it claims."""

    source: str
    says: str
    packet: int | None
    claims: tuple[Claim, ...]
    from_mac_only: bool = False
    rests_on_mac: bool = False
    basis: Basis = ()
    """The device's clues ``(field, value)`` the match rests on (the MAC aside)."""


@dataclass(frozen=True)
class DeviceFacts:
    """A device's clues, grouped as the matchers read them."""

    mac_hex: str
    hostnames: Mapping[str, tuple[int | None, str]]  # name → (frame, clue field)
    services: Mapping[str, int | None]
    instances: Mapping[str, int | None]
    txt: Mapping[str, tuple[str, int | None, str]]  # lower-case key → (value, frame, clue)
    texts: Mapping[str, Mapping[str, int | None]]  # field → value → frame

    @classmethod
    def gather(cls, mac: bytes, clues: Iterable[tuple[str, str, int | None]]) -> DeviceFacts:
        """Group ``(field, value, frame)`` clues (first frame of each kept)."""
        hostnames: dict[str, tuple[int | None, str]] = {}
        services: dict[str, int | None] = {}
        instances: dict[str, int | None] = {}
        txt: dict[str, tuple[str, int | None, str]] = {}
        texts: dict[str, dict[str, int | None]] = {}
        for field_name, value, packet in clues:
            if field_name in HOST_FIELDS:
                hostnames.setdefault(value, (packet, field_name))
            elif field_name == "mdns_service":
                services.setdefault(value.lower(), packet)
            elif field_name == "mdns_instance":
                instances.setdefault(value, packet)
            elif field_name == "mdns_txt":
                key, _, val = value.partition("=")
                txt.setdefault(key.lower(), (val, packet, value))
            texts.setdefault(field_name, {}).setdefault(value, packet)
        # a locally administered (made-up) MAC has no maker's prefix
        mac_hex = "" if mac[:1] and mac[0] & 0x02 else mac.hex().upper()
        return cls(mac_hex, hostnames, services, instances, txt, texts)


@dataclass(frozen=True)
class DiscoveryRegistry:
    """Home Assistant's discovery matchers, compiled."""

    version: str
    integrations: Mapping[str, Integration]
    dhcp: tuple[DhcpMatcher, ...]
    zeroconf: Mapping[str, tuple[ZeroconfMatcher, ...]]
    homekit_models: Mapping[str, str]
    homekit_patterns: tuple[tuple[Glob, str], ...]
    ssdp: tuple[SsdpMatcher, ...]
    dhcp_by_prefix: Mapping[str, tuple[DhcpMatcher, ...]] = field(default_factory=dict)
    dhcp_prefix_lengths: tuple[int, ...] = ()
    ssdp_by_literal: Mapping[tuple[str, str], tuple[SsdpMatcher, ...]] = field(
        default_factory=dict)
    ssdp_unindexed: tuple[SsdpMatcher, ...] = ()

    def __post_init__(self) -> None:
        """Index the DHCP matchers by MAC prefix (a MAC only meets its own) and the
        SSDP matchers by their first literal value (most are exact URNs or names)."""
        index: dict[str, list[DhcpMatcher]] = {}
        for matcher in self.dhcp:
            if matcher.mac_prefix is not None:
                index.setdefault(matcher.mac_prefix, []).append(matcher)
        object.__setattr__(self, "dhcp_by_prefix", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "dhcp_prefix_lengths", tuple(sorted({len(k) for k in index})))
        by_literal: dict[tuple[str, str], list[SsdpMatcher]] = {}
        unindexed: list[SsdpMatcher] = []
        for ssdp in self.ssdp:
            literal = next(((k, p.prefix) for k, p in ssdp.keys if p.literal), None)
            if literal is None:
                unindexed.append(ssdp)
            else:
                by_literal.setdefault(literal, []).append(ssdp)
        object.__setattr__(self, "ssdp_by_literal", {k: tuple(v) for k, v in by_literal.items()})
        object.__setattr__(self, "ssdp_unindexed", tuple(unindexed))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DiscoveryRegistry:
        """Compile the JSON registry; raise ``KnowledgeError`` when it is malformed."""
        try:
            integrations = {str(d): Integration(str(v["name"]), v.get("maker"),
                                                v.get("platform"))
                            for d, v in data["integrations"].items()}
            dhcp = tuple(DhcpMatcher(
                str(m["d"]), Glob.parse(m["hostname"]) if "hostname" in m else None,
                _hex_prefix(m["mac"]) if "mac" in m else None) for m in data["dhcp"])
            zeroconf = {str(service).lower(): tuple(ZeroconfMatcher(
                str(m["d"]), Glob.parse(m["name"]) if "name" in m else None,
                tuple((str(k).lower(), Glob.parse(v))
                      for k, v in m.get("properties", {}).items())) for m in matchers)
                for service, matchers in data["zeroconf"].items()}
            homekit_models = {str(k): str(v) for k, v in data["homekit"].items()
                              if not set("*?[") & set(k)}
            homekit_patterns = tuple((Glob.parse(k), str(v)) for k, v in data["homekit"].items()
                                     if set("*?[") & set(k))
            ssdp = tuple(SsdpMatcher(str(m["d"]), tuple(
                (k, Glob.parse(v)) for k, v in m.items() if k != "d")) for m in data["ssdp"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise KnowledgeError(f"discovery registry is malformed: {exc!r}") from None
        for matcher in ssdp:
            unknown = {k for k, _ in matcher.keys} - set(SSDP_FIELDS)
            if unknown:
                raise KnowledgeError(f"unknown SSDP matcher keys {sorted(unknown)}")
        domains = ({m.domain for m in dhcp} | {m.domain for ms in zeroconf.values() for m in ms}
                   | set(homekit_models.values()) | {d for _, d in homekit_patterns}
                   | {m.domain for m in ssdp})
        if domains - set(integrations):
            raise KnowledgeError(f"registry names unknown integrations "
                                 f"{sorted(domains - set(integrations))[:5]}")
        return cls(str(data.get("_about", {}).get("version", "?")), integrations, dhcp,
                   zeroconf, homekit_models, homekit_patterns, ssdp)

    def matches(self, facts: DeviceFacts,
                weights: Mapping[str, float] | None = None) -> list[RegistryMatch]:
        """Every integration the device's clues match, at most one match per
        integration and kind of clue (the strongest)."""
        weight = {**DEFAULT_WEIGHTS, **(weights or {})}
        found: dict[tuple[str, str], RegistryMatch] = {}

        def add(kind: str, domain: str, says: str, packet: int | None, basis: Basis) -> None:
            group = "dhcp" if kind in ("dhcp", "hostname", "mac") else kind
            group = "zeroconf" if group == "zeroconf_type" else group
            strength = weight[WEIGHT_KEYS[kind]]
            known = found.get((group, domain))
            if known is not None and known.claims[0].weight >= strength:
                return
            integration = self.integrations[domain]
            found[(group, domain)] = RegistryMatch(
                WEIGHT_KEYS[kind], f"{says} → {integration.platform or integration.name}",
                packet,
                self._claims(domain, strength), kind == "mac", kind in ("mac", "dhcp"), basis)

        self._dhcp(facts, add)
        self._zeroconf(facts, add)
        self._homekit(facts, add)
        self._ssdp(facts, add)
        return list(found.values())

    def _claims(self, domain: str, strength: float) -> tuple[Claim, ...]:
        integration = self.integrations[domain]
        if integration.platform is not None:
            return (Claim("platform", integration.platform, strength),)
        return (Claim("manufacturer", integration.maker or integration.name, strength),)

    def _dhcp(self, facts: DeviceFacts, add: Adder) -> None:
        candidates = [m for length in self.dhcp_prefix_lengths if facts.mac_hex
                      for m in self.dhcp_by_prefix.get(facts.mac_hex[:length], ())]
        if facts.hostnames:
            candidates += [m for m in self.dhcp if m.mac_prefix is None]
        for matcher in candidates:
            mac_ok = matcher.mac_prefix is not None
            if matcher.hostname is not None:
                host = next(((h, p, f) for h, (p, f) in facts.hostnames.items()
                             if matcher.hostname.match(h)), None)
                if host is not None and (matcher.mac_prefix is None or mac_ok):
                    kind = "dhcp" if mac_ok else "hostname"
                    prefix = f" and MAC {matcher.mac_prefix}*" if mac_ok else ""
                    label = "DHCP hostname" if host[2] == "hostname" else "mDNS host name"
                    add(kind, matcher.domain, f"{label} {matcher.hostname.text}{prefix}",
                        host[1], ((host[2], host[0]),))
                    continue
            if mac_ok and matcher.hostname is None:
                add("mac", matcher.domain, f"MAC prefix {matcher.mac_prefix}*", None, ())

    def _zeroconf(self, facts: DeviceFacts, add: Adder) -> None:
        for service, packet in facts.services.items():
            for matcher in self.zeroconf.get(service, ()):
                basis: list[tuple[str, str]] = [("mdns_service", service)]
                if matcher.name is not None:
                    instance = next((i for i in facts.instances
                                     if matcher.name.match(f"{i}.{service}.local.")), None)
                    if instance is None:
                        continue
                    basis.append(("mdns_instance", instance))
                if not all(key in facts.txt and pattern.match(facts.txt[key][0])
                           for key, pattern in matcher.properties):
                    continue
                detail = (f" named {matcher.name.text}" if matcher.name else "") + "".join(
                    f" {k}={p.text}" for k, p in matcher.properties)
                basis += [("mdns_txt", facts.txt[key][2]) for key, _ in matcher.properties]
                kind = "zeroconf" if matcher.name or matcher.properties else "zeroconf_type"
                add(kind, matcher.domain, f"mDNS {service}{detail}", packet, tuple(basis))

    def _homekit(self, facts: DeviceFacts, add: Adder) -> None:
        if not any(s in facts.services for s in HAP_SERVICES) or "md" not in facts.txt:
            return
        model, packet, clue = facts.txt["md"]
        domain = None
        for key in (model, model.split(" ")[0], model.split("-")[0]):
            domain = self.homekit_models.get(key)
            if domain is not None:
                break
        if domain is None:
            domain = next((d for pattern, d in self.homekit_patterns
                           if pattern.match(model)), None)
        if domain is not None:
            add("homekit", domain, f"HomeKit model {model!r}", packet, (("mdns_txt", clue),))

    def _ssdp(self, facts: DeviceFacts, add: Adder) -> None:
        seen = {key: [(v, p, f) for f in fields for v, p in facts.texts.get(f, {}).items()]
                for key, fields in SSDP_FIELDS.items()}
        candidates = list(self.ssdp_unindexed)
        for key, values in seen.items():
            for value, _, _ in values:
                for matcher in self.ssdp_by_literal.get((key, value[:MAX_TEXT].lower()), ()):
                    if matcher not in candidates:
                        candidates.append(matcher)
        for matcher in candidates:
            if not all(seen[key] for key, _ in matcher.keys):
                continue
            packet: int | None = None
            hits: list[tuple[str, str]] = []
            for key, pattern in matcher.keys:
                hit = next(((v, p, f) for v, p, f in seen[key] if pattern.match(v)), None)
                if hit is None:
                    break
                packet = hit[1] if packet is None else packet
                hits.append((hit[2], hit[0]))
            else:
                says = ", ".join(f"{k}={p.text}" for k, p in matcher.keys)
                add("ssdp", matcher.domain, f"SSDP {says}", packet, tuple(hits))


def _hex_prefix(text: Any) -> str:
    value = str(text).upper()
    if not value or len(value) > 12 or any(c not in "0123456789ABCDEF" for c in value):
        raise KnowledgeError(f"bad registry MAC prefix {value!r}")
    return value


def registry_matches(registry: DiscoveryRegistry, mac: bytes,
                     clues: Sequence[tuple[str, str, int | None]],
                     weights: Mapping[str, float] | None = None) -> list[RegistryMatch]:
    """The registry's matches for the device at ``mac`` with these clues."""
    return registry.matches(DeviceFacts.gather(mac, clues), weights)
