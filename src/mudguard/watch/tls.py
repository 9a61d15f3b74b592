"""Does a device's ClientHello fit its MUD (D)TLS profile (RFC 9761)? Pure.

Theory of operation: ``check_hello(hello, profiles)`` compares what a ClientHello
offers (``watch.clienthello``) with each profile of the ACE its flow matched; the hello
fits when it fits one of them. Otherwise the result names the differences against the
nearest profile, each a ``TlsDeviation`` with a kind, the offending values and what
the profile allows, so the owner reads e.g. "offered TLS 1.0", "cipher suite 0x000a not
in its profile" or "ALPN h2 instead of mqtt".

The rules follow RFC 9761 §6: a parameter the profile does not list is a deviation when
mudguard recognises it; GREASE values (RFC 8701) are ignored, and so are the signalling
cipher suite values (TLS_EMPTY_RENEGOTIATION_INFO_SCSV, TLS_FALLBACK_SCSV) and
extension types outside the registry ranges mudguard knows; a parameter the profile
leaves out (an empty leaf-list) is not checked. A ClientHello cut by the snap length is
checked only for what was read. Trust anchors (``accept-list-ta-cert``, SPKI pins,
certificate authorities) concern the server's certificate, which TLS 1.3 encrypts:
they are declared, not observed.

``TlsObservation`` is one logged ClientHello attributed to a device (the adapter
``watch.tls_listener`` builds it); ``observe`` turns it into a ``TlsVerdict``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from mudguard.mud import Ace, Direction, MudFile
from mudguard.mud.tls_profile import TlsProfile, is_grease, is_grease_alpn, is_grease_psk_mode
from mudguard.watch.clienthello import DTLS_VERSION_NAMES, TLS_VERSION_NAMES, ClientHello

SIGNALLING_SUITES = frozenset({0x00FF, 0x5600})
"""RFC 5746 TLS_EMPTY_RENEGOTIATION_INFO_SCSV and RFC 7507 TLS_FALLBACK_SCSV: signals,
not cipher suites a client would use."""
RECOGNISED_EXTENSIONS = frozenset({*range(0, 64), 0xFF01, 0xFE0D})
"""Extension types mudguard recognises (the IANA registry's assigned range at the time
of writing, renegotiation_info, encrypted_client_hello). Others are ignored (§6)."""
MAX_SHOWN = 4

_PROFILE_VERSIONS = {"tls12": 0x0303, "tls13": 0x0304, "dtls12": 0xFEFD, "dtls13": 0xFEFC}
EXTENSION_NAMES = {0: "server_name", 5: "status_request", 10: "supported_groups",
                   11: "ec_point_formats", 13: "signature_algorithms", 16: "ALPN",
                   18: "signed_certificate_timestamp", 21: "padding",
                   22: "encrypt_then_mac", 23: "extended_master_secret",
                   27: "compress_certificate", 35: "session_ticket", 41: "pre_shared_key",
                   42: "early_data", 43: "supported_versions", 45: "psk_key_exchange_modes",
                   49: "post_handshake_auth", 50: "signature_algorithms_cert",
                   51: "key_share", 0xFF01: "renegotiation_info"}


def version_name(version: int) -> str:
    """``TLS 1.2``, ``DTLS 1.3`` … or the hex value."""
    return TLS_VERSION_NAMES.get(version) or DTLS_VERSION_NAMES.get(version) \
        or f"version {version:#06x}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsDeviation:
    """One way a ClientHello differs from the profile."""

    kind: str  # version, dtls, tls, not-tls, cipher, extension, group, sigalg,
    #            sigalg-cert, alpn, psk-mode, cert-compression
    offered: tuple[str, ...]  # the offending values, as text
    allowed: tuple[str, ...] = ()  # what the profile lists, as text

    @property
    def reason(self) -> str:
        """The difference in English words (the portal renders it from catalogue keys)."""
        shown = ", ".join(self.offered[:MAX_SHOWN]) + (" …" if len(self.offered) > MAX_SHOWN
                                                       else "")
        if self.kind == "version":
            return f"offered {shown}"
        if self.kind == "not-tls":
            return f"not a TLS ClientHello ({shown})"
        if self.kind == "dtls":
            return "DTLS where its profile states TLS only"
        if self.kind == "tls":
            return "TLS where its profile states DTLS only"
        if self.kind == "alpn":
            return f"ALPN {shown} instead of {', '.join(self.allowed)}"
        what = {"cipher": "cipher suite", "extension": "extension", "group": "group",
                "sigalg": "signature algorithm", "sigalg-cert": "certificate signature "
                "algorithm", "psk-mode": "PSK mode", "cert-compression":
                "certificate compression"}.get(self.kind, self.kind)
        return f"{what} {shown} not in its profile"

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (stored with the event)."""
        return {"kind": self.kind, "offered": list(self.offered), "allowed": list(self.allowed),
                "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsVerdict:
    """The outcome of one ClientHello: fits (no deviation) or not, against which profile."""

    profile: str
    deviations: tuple[TlsDeviation, ...] = ()

    @property
    def fits(self) -> bool:
        """True when the ClientHello fits the profile."""
        return not self.deviations

    @property
    def reason(self) -> str:
        """All deviations in words, ``; ``-separated ("" when it fits)."""
        return "; ".join(d.reason for d in self.deviations)


def check_hello(hello: ClientHello, profiles: Sequence[TlsProfile]) -> TlsVerdict:
    """The verdict of ``hello`` against the ACE's ``profiles`` (alternatives): fits if it
    fits one; else the deviations from the nearest (fewest deviations, first on ties)."""
    if not profiles:
        raise ValueError("no profile to check against")
    best: TlsVerdict | None = None
    for profile in profiles:
        verdict = TlsVerdict(profile=profile.name, deviations=_deviations(hello, profile))
        if verdict.fits:
            return verdict
        if best is None or len(verdict.deviations) < len(best.deviations):
            best = verdict
    assert best is not None
    return best


def _deviations(hello: ClientHello, p: TlsProfile) -> tuple[TlsDeviation, ...]:
    found: list[TlsDeviation] = []
    found += _versions(hello, p)
    checks: tuple[tuple[str, tuple[int, ...] | None, tuple[int, ...]], ...] = (
        ("cipher", _plain_suites(hello.cipher_suites), p.cipher_suites),
        ("extension", _recognised(hello.extension_types), p.extension_types),
        ("group", hello.supported_groups, p.supported_groups),
        ("sigalg", hello.signature_algorithms, p.signature_algorithms),
        ("sigalg-cert", hello.signature_algorithms_cert, p.signature_algorithms_cert),
        ("cert-compression", hello.cert_compression_algorithms,
         p.cert_compression_algorithms),
    )
    for kind, offered, allowed in checks:
        if offered is None or not allowed:
            continue
        extra = [v for v in offered if not is_grease(v) and v not in allowed]
        if extra:
            found.append(TlsDeviation(kind=kind, offered=tuple(_code(kind, v) for v in extra),
                                      allowed=tuple(_code(kind, v) for v in allowed)))
    if hello.psk_key_exchange_modes is not None and p.psk_key_exchange_modes:
        extra = [v for v in hello.psk_key_exchange_modes
                 if not is_grease_psk_mode(v) and v not in p.psk_key_exchange_modes]
        if extra:
            found.append(TlsDeviation(kind="psk-mode", offered=tuple(map(str, extra)),
                                      allowed=tuple(map(str, p.psk_key_exchange_modes))))
    if hello.application_protocols is not None and p.application_protocols:
        names = [a for a in hello.application_protocols
                 if not is_grease_alpn(a) and a not in p.application_protocols]
        if names:
            found.append(TlsDeviation(kind="alpn", offered=tuple(names),
                                      allowed=p.application_protocols))
    return tuple(found)


def _versions(hello: ClientHello, p: TlsProfile) -> list[TlsDeviation]:
    stated = p.dtls_versions if hello.dtls else p.tls_versions
    other = p.tls_versions if hello.dtls else p.dtls_versions
    if not stated:
        if other:  # the profile names only the other protocol
            return [TlsDeviation(kind="dtls" if hello.dtls else "tls", offered=(),
                                 allowed=tuple(version_name(_PROFILE_VERSIONS[v])
                                               for v in other))]
        return []
    allowed = {_PROFILE_VERSIONS[v] for v in stated}
    if hello.supported_versions is None and not hello.complete:
        offered: tuple[int, ...] = ()  # the extension may lie beyond the cut
    else:
        offered = hello.offered_versions
    extra = [v for v in offered if not is_grease(v) and v not in allowed]
    if not extra:
        return []
    return [TlsDeviation(kind="version", offered=tuple(version_name(v) for v in extra),
                         allowed=tuple(version_name(v) for v in sorted(allowed)))]


def _plain_suites(suites: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if suites is None:
        return None
    return tuple(s for s in suites if s not in SIGNALLING_SUITES)


def _recognised(types: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if types is None:
        return None
    return tuple(t for t in types if t in RECOGNISED_EXTENSIONS)


def _code(kind: str, value: int) -> str:
    if kind == "extension" and value in EXTENSION_NAMES:
        return f"{value} ({EXTENSION_NAMES[value]})"
    return f"{value:#06x}"


# -- attributing a ClientHello to a device's ACE -------------------------------------------


def profiled_aces(mud: MudFile, protocol: int, port: int, *, family: int | None = None,
                  dst: str | None = None) -> tuple[Ace, ...]:
    """The device's from-device ACEs with (D)TLS profiles whose transport match admits a
    flow of ``protocol`` to destination ``port`` (the kernel marked it for that reason),
    and, when given, whose IP version is ``family`` and whose destination network (if it
    names one) holds ``dst``. A DNS-name peer cannot be checked here and is kept."""
    found = []
    for ace in mud.policy_aces(Direction.FROM_DEVICE):
        t, ip = ace.matches.transport, ace.matches.ip
        if not ace.matches.tls_profiles or t is None or t.protocol != protocol:
            continue
        if t.dst_port is not None and not t.dst_port.contains(port):
            continue
        if ip is not None and family is not None and ip.version != family:
            continue
        if ip is not None and dst is not None and ip.dst_network is not None \
                and not _within(dst, ip.dst_network):
            continue
        found.append(ace)
    return tuple(found)


def _within(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsObservation:
    """One ClientHello a device sent, as the kernel logged it."""

    device_id: str
    family: int
    src: str
    dst: str
    protocol: int
    src_port: int
    dst_port: int
    hello: ClientHello | None  # None: the first payload was not a (D)TLS ClientHello
    problem: str = ""  # why it is not one (``ClientHelloError`` text)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (evidence)."""
        return {"device_id": self.device_id, "src": self.src, "dst": self.dst,
                "protocol": self.protocol, "src_port": self.src_port,
                "dst_port": self.dst_port, "problem": self.problem or None,
                "hello": self.hello.as_dict() if self.hello is not None else None}


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsOutcome:
    """An observation judged against the device's MUD file."""

    observation: TlsObservation
    ace: str  # "acl/ace" whose profiles were used, "" when none applies
    verdict: TlsVerdict | None  # None: no profile applies (nothing to say)

    @property
    def deviates(self) -> bool:
        """True when the flow's ClientHello does not fit (or is not TLS at all)."""
        return self.verdict is not None and not self.verdict.fits

    @property
    def reason(self) -> str:
        """The deviation in words ("" when it fits or nothing applies)."""
        return self.verdict.reason if self.verdict is not None else ""

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (the stored event)."""
        verdict = self.verdict
        return {"ace": self.ace, "fits": verdict.fits if verdict is not None else None,
                "profile": verdict.profile if verdict is not None else None,
                "reason": self.reason,
                "deviations": [d.as_dict() for d in verdict.deviations] if verdict else [],
                "observation": self.observation.as_dict()}


def judge(observation: TlsObservation, mud: MudFile) -> TlsOutcome:
    """Judge one observation against ``mud``: the first profiled ACE matching the flow's
    protocol and port decides (policy order, as the kernel's rules)."""
    for ace in profiled_aces(mud, observation.protocol, observation.dst_port,
                             family=observation.family, dst=observation.dst):
        acl = next((a.name for a in mud.acls if ace in a.aces), "")
        where = f"{acl}/{ace.name}"
        if observation.hello is None:
            not_tls = TlsDeviation(kind="not-tls", offered=(observation.problem or "?",))
            return TlsOutcome(observation=observation, ace=where, verdict=TlsVerdict(
                profile=ace.matches.tls_profiles[0].name, deviations=(not_tls,)))
        return TlsOutcome(observation=observation, ace=where,
                          verdict=check_hello(observation.hello, ace.matches.tls_profiles))
    return TlsOutcome(observation=observation, ace="", verdict=None)
