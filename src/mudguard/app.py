"""The composition root: build every adapter from the configuration and wire the services.

Plain code, read top to bottom (STYLE.md §2.1): nothing here decides policy, and
nothing is created at import time. ``build_gateway(config, events)`` returns the
``Gateway`` that ``mudguard run`` runs:

    store (SQLite) ─┬─ DeviceService ── fetch (HTTPS, SSRF-checked, test CA in the demo)
                    │                ├─ repositories (HTTPS index.json, local folders)
                    │                ├─ verify (CMS signatures against the configured roots)
                    │                └─ GuardedEnforcer ── Enforcer (nftables) + DnsGuard
    dnsmasq (DHCP) ── hook socket ──┬─ Intake ── DeviceService.observe
    DHCP ACKs sniffed on the LAN ───┤
    LLDP on the LAN ports ──────────┤
    IPv6 neighbour table (SLAAC) ───┘
    hostapd (driver from config) ── wpa_psk_file ── KeyManager (issue: portal; revoke: forget)
    DnsServer (LAN :53) ── DnsGuard ── nft set fills
    Watcher (NFLOG + conntrack) ── alerts ── DeviceService.quarantine
      └─ evidence named by DnsNames (what the device resolved: the DNS server's fills)
    Portal (FastAPI, LAN side) ── PortalServices ── DeviceService
    ControlServer (unix socket) ── DeviceService
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mudguard.daemon.activity import ActivityLog
from mudguard.daemon.config import ConfigError, GatewayConfig
from mudguard.daemon.control import ControlServer
from mudguard.daemon.dnsmasq import Dnsmasq
from mudguard.daemon.events import EventLog
from mudguard.daemon.gateway import Gateway, GuardedEnforcer
from mudguard.daemon.learning import LearningRecorder
from mudguard.daemon.names import DnsNames
from mudguard.daemon.reload import pinned_settings
from mudguard.devices.repository import RepositoryError, load_repositories
from mudguard.devices.service import DeviceService
from mudguard.devices.transparency import TransparencyChecker
from mudguard.discovery.dhcp import DhcpHookListener
from mudguard.discovery.sighting import Intake
from mudguard.dns.core import DnsGuard, GuardConfig
from mudguard.dns.server import DnsServer, NftSetFiller, Upstream
from mudguard.enforce import Enforcer, LanIsolation, LanPortWatcher, Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer, DataSetFiller
from mudguard.mud.fetch import (
    FetchConfig,
    fetch_local_sbom,
    fetch_mud_bytes,
    fetch_signature_bytes,
    fetch_transparency_bytes,
)
from mudguard.store import Store
from mudguard.watch import DeviationTracker
from mudguard.watch.listener import AddressBook, Watcher
from mudguard.watch.resolvers import ResolverWatch
from mudguard.watch.tls_listener import TlsWatcher

log = logging.getLogger(__name__)


def upstream_resolver(servers: Sequence[str], timeout: float = 3.0
                      ) -> Callable[[str, int], list[str]]:
    """A resolver for the MUD fetcher that asks the configured upstream DNS servers
    (the gateway's own lookups must not depend on the host's resolv.conf)."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    def resolve(host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        found: list[str] = []
        for server in servers:
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                try:
                    answer = dns.query.udp(dns.message.make_query(host, rdtype), server,
                                           timeout=timeout)
                except (dns.exception.DNSException, OSError):
                    continue
                found += [str(r.address) for rrset in answer.answer
                          if rrset.rdtype == rdtype for r in rrset]
            if found:
                return found
        raise OSError(f"cannot resolve {host}")

    return resolve


def fetch_config(config: GatewayConfig) -> FetchConfig:
    """How the daemon fetches MUD files: names resolved by the configured upstream DNS,
    never from the home's prefixes or the gateway's configured addresses, nor from any
    address the kernel says is the gateway's own (the fetcher's default check, read live
    at each fetch: a WAN address from DHCP or SLAAC is not in the configuration)."""
    home_networks = tuple(ipaddress.ip_network(p, strict=False) for p in
                          (*config.lan_prefixes, *config.addresses))
    return FetchConfig(ca_bundle=config.ca_file, blocked_prefixes=home_networks,
                       resolver=upstream_resolver(config.dns_upstream))


class MudFetcher:
    """``DeviceService.fetch``: a MUD file, or the signature a fetched MUD file named."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self._signature_urls: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, url: str) -> bytes:
        """Fetch ``url`` as a MUD file, or as a signature if a MUD file named it so."""
        with self._lock:
            is_signature = url in self._signature_urls
        if is_signature:
            return fetch_signature_bytes(url, config=self.config)
        data = fetch_mud_bytes(url, config=self.config)
        from mudguard.mud import parse_mud

        parsed = parse_mud(data, expected_url=url).mud
        if parsed is not None and parsed.mud_signature:
            with self._lock:
                self._signature_urls.add(parsed.mud_signature)
        return data


def transparency_checker(config: GatewayConfig, clock: Callable[[], datetime]
                         ) -> TransparencyChecker:
    """The RFC 9472 SBOM checker: cloud SBOMs through the MUD fetcher's guards, a
    device's own SBOM from exactly its address (``fetch_local_sbom``)."""
    fetching = fetch_config(config)
    return TransparencyChecker(
        fetch_cloud=lambda url: fetch_transparency_bytes(url, config=fetching),
        fetch_device=lambda address, scheme: fetch_local_sbom(address, scheme,
                                                              config=fetching),
        clock=clock)


def signature_verifier(roots: Path | None) -> Callable[[bytes, bytes, datetime], str] | None:
    """``DeviceService.verify`` against the PEM trust anchors in ``roots`` (None: none).

    Returns the signer's identity (its subject and the key id of the CA that issued
    it, ``signature.signer_identity``); raises ``SignatureError`` with its reason
    otherwise. The file is read and its PEM framing checked now (a missing or empty
    file fails at start); ``cryptography`` parses it at the first signature, so a
    daemon that has nothing to verify does not carry it (#19).
    """
    if roots is None:
        return None
    pem = roots.read_bytes()
    pem_certificates(pem)
    anchors: list[Any] = []
    lock = threading.Lock()

    def verify(data: bytes, sig: bytes, at: datetime) -> str:
        from mudguard.mud import signature

        with lock:
            if not anchors:
                anchors.extend(signature.load_trust_anchors(pem))
        status = signature.verify_mud_signature(data, sig, trust_anchors=anchors, at=at)
        status.raise_if_invalid()
        return status.signer_identity or status.signer_subject or "an unnamed signer"

    return verify


def pem_certificates(pem: bytes) -> list[bytes]:
    """The DER of each ``CERTIFICATE`` block of a PEM bundle; raises ValueError when there
    is none or a block is not base64 of a DER sequence (no ``cryptography`` needed)."""
    import base64
    import binascii

    text = pem.decode("ascii", "replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    found = []
    start = text.find(begin)
    while start >= 0:
        stop = text.find(end, start)
        if stop < 0:
            raise ValueError("a PEM certificate block has no END line")
        body = "".join(text[start + len(begin):stop].split())
        try:
            der = base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"a PEM certificate block is not base64: {exc}") from None
        if not der.startswith(b"\x30"):
            raise ValueError("a PEM certificate block does not hold a DER certificate")
        found.append(der)
        start = text.find(begin, stop)
    if not found:
        raise ValueError("no certificate in the trust anchors file")
    return found


class PortalRunner:
    """The owner's portal (FastAPI under uvicorn) in its own thread, on the LAN side."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False,
            server_header=False, proxy_headers=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name="portal", daemon=True)

    async def start(self) -> None:
        """Start serving; wait (up to 10 s) until the socket listens."""
        self.thread.start()
        for _ in range(200):
            if self.server.started or not self.thread.is_alive():
                break
            await asyncio.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("the portal did not start (is its address configured?)")

    async def stop(self) -> None:
        """Ask uvicorn to finish and wait for the thread."""
        self.server.should_exit = True
        await asyncio.get_running_loop().run_in_executor(None, self.thread.join, 10)


def _enforced(enforcer: Enforcer | DataGatewayEnforcer, mac: bytes) -> bool:
    """Whether the gateway enforces rules for ``mac`` (a device it knows): a dict lookup,
    so announcements from forged MACs are dropped before any parsing."""
    return enforcer.policy(":".join(f"{b:02x}" for b in mac)) is not None


def _answered(learner: LearningRecorder | None, identifier: Any,
              mac_of: Callable[[str], str | None]) -> Callable[[str, str, tuple[str, ...]],
                                                              None]:
    """The DNS guard's answer callback: the learning recorder names the peers, and the
    live identifier takes the name asked as a clue about the device asking."""
    def answered(client: str, name: str, addresses: tuple[str, ...]) -> None:
        if learner is not None:
            learner.on_answer(client, name, addresses)
        mac = mac_of(client)
        if mac is not None:
            identifier.on_name(mac, name)

    return answered


def _both(first: Callable[[Any], None],
          second: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """One watcher callback that calls ``first`` then ``second`` (when given)."""
    if second is None:
        return first

    def both(value: Any) -> None:
        first(value)
        second(value)

    return both


def _port_clues(identifier: Any, mac_of: AddressBook) -> Callable[[Any], None]:
    """#16: a new connection between two devices of the home, read for the ports of
    makers' local protocols (``identify.live.connection_port_clues``)."""
    from mudguard.identify.knowledge import port_numbers
    from mudguard.identify.live import connection_port_clues

    ports = identifier.kb.service_ports
    numbers = port_numbers(ports)

    def on_connection(conn: Any) -> None:
        if conn.src_port not in numbers and conn.dst_port not in numbers:
            return  # the usual case: two set lookups, no address lookup
        clues = connection_port_clues(conn.protocol, conn.src_port, conn.dst_port,
                                      mac_of(conn.src), mac_of(conn.dst), ports)
        if clues:
            identifier.on_ports(clues)

    return on_connection


def lldp_listeners(lan_interface: str) -> list[Any]:
    """One LLDP listener per port of the LAN bridge present now (LLDP frames are
    link-local: a bridge does not forward them, they arrive on the port), or on the LAN
    interface itself when it is not a bridge. Without CAP_NET_RAW: none, one log line."""
    from mudguard.discovery.lldp import LldpListener

    ports_dir = Path("/sys/class/net") / lan_interface / "brif"
    ports = sorted(p.name for p in ports_dir.iterdir()) if ports_dir.is_dir() \
        else [lan_interface]
    listeners = [LldpListener.open(port) for port in ports]
    return [listener for listener in listeners if listener is not None]


def lan_isolation(config: GatewayConfig) -> LanIsolation | None:
    """``LanIsolation`` for the LAN bridge (ports isolated, proxy ARP/ND: device-to-device
    traffic is routed through the rules), or None when it is off or the LAN interface is
    not a bridge (then there is nothing at layer 2 to close)."""
    if not config.isolate_lan:
        log.warning("gateway.isolate_lan is off: devices on the LAN bridge reach each other "
                    "without crossing their rules")
        return None
    if not (Path("/sys/class/net") / config.lan_interface / "bridge").is_dir():
        log.info("LAN interface %s is not a bridge: no ports to isolate", config.lan_interface)
        return None
    return LanIsolation(config.lan_interface)


class WifiKeys:
    """hostapd with the per-device key file, the key manager that writes it, and the
    watcher of hostapd's events that applies the binding rule (a one-time key binds to
    the first MAC that uses it; another device's key with a wrong MAC is refused).

    ``on_key_event(event, now)`` receives the key manager's binding-rule events and
    ``on_decision(event, decision)`` every decision (both from the watcher's thread).
    """

    def __init__(self, config: GatewayConfig) -> None:
        from mudguard.daemon.hostapd import Hostapd
        from mudguard.keys.ring import KeyRing
        from mudguard.keys.service import KeyEventWatcher, KeyFiles, KeyManager

        assert config.wifi_ssid is not None
        self.hostapd = Hostapd(interface=config.wifi_interface, ssid=config.wifi_ssid,
                               psk_file=config.psk_file, state_dir=config.state_dir) \
            if config.run_hostapd else None
        ctrl_path = self.hostapd.ctrl_path if self.hostapd else config.wifi_ctrl
        self.manager = KeyManager(KeyRing(config.keys_db), KeyFiles(
            psk_file=config.psk_file, pmk_ssid=config.wifi_ssid, ctrl_path=ctrl_path),
            notify=self._key_event)
        self.watcher = KeyEventWatcher(self.manager, ctrl_path, on_decision=self._decided) \
            if ctrl_path is not None else None
        self.on_key_event: Callable[[dict[str, str], float], None] | None = None
        self.on_decision: Callable[[Any, Any], None] | None = None

    def _key_event(self, event: dict[str, str], now: float) -> None:
        if self.on_key_event is not None:
            self.on_key_event(event, now)

    def _decided(self, event: Any, decision: Any) -> None:
        if self.on_decision is not None:
            self.on_decision(event, decision)

    def start(self) -> None:
        """Start hostapd, rewrite the key file from the ring and reload it, then follow
        hostapd's events."""
        if self.hostapd is not None:
            self.hostapd.start()
        self.manager.sync()
        if self.watcher is not None:
            self.watcher.start()

    def stop(self) -> None:
        """Stop following events, then stop hostapd."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.hostapd is not None:
            self.hostapd.stop()


def build_gateway(config: GatewayConfig, events: EventLog) -> Gateway:
    """Build and wire every part of the gateway for ``config`` (nothing starts yet)."""
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store(config.database)
    settings = store.get_settings()
    wanted = pinned_settings(settings, config)
    if wanted != settings:
        settings = wanted
        store.save_settings(settings)

    context = config.home_context()
    metrics = None
    if config.metrics_listen is not None:
        from mudguard.daemon.metrics import GatewayMetrics, TimedFiller, TimedNft

        metrics = GatewayMetrics()
    nft = TimedNft(metrics) if metrics else Nft()  # metrics: each batch's latency
    lan = lan_isolation(config)
    enforcer: Enforcer | DataGatewayEnforcer
    if config.ruleset == "data":  # policy as data: one fixed ruleset, devices as elements
        enforcer = DataGatewayEnforcer(nft, context, home_default=settings.home_default.value,
                                       lan=lan)
    else:
        enforcer = Enforcer(nft, context, home_default=settings.home_default.value, lan=lan)
    guard = DnsGuard(GuardConfig(lan_prefixes=config.lan_prefixes,
                                 gateway_addresses=config.addresses))
    tracker = DeviationTracker(lan_prefixes=config.lan_prefixes)
    guarded = GuardedEnforcer(enforcer, guard, events, tracker=tracker)
    guarded.home_default = settings.home_default.value

    fetch: Callable[[str], bytes] = MudFetcher(fetch_config(config))
    if metrics is not None:
        fetch = metrics.counting_fetch(fetch)
    wifi = WifiKeys(config) if config.wifi_ssid else None
    revoker = None
    if wifi is not None:
        from mudguard.devices.wiring import KeyManagerRevoker

        revoker = KeyManagerRevoker(wifi.manager)
    try:
        repositories = load_repositories(config.repositories, fetch)
    except RepositoryError as exc:
        raise ConfigError(f"mud.repositories: {exc}") from None
    service = DeviceService(store=store, fetch=fetch,
                            verify=signature_verifier(config.signature_roots),
                            enforcer=guarded, keys=revoker, repositories=repositories,
                            learns=config.learning, lan_prefixes=config.lan_prefixes,
                            gateway_ips=config.addresses)

    from mudguard.identify.live import LiveIdentifier

    identifier = LiveIdentifier.load()
    service.identify = identifier.from_learning  # maker and kind from learned traffic
    intake = Intake(service, enrich=identifier.enrich)
    guarded.on_removed = intake.forget  # a forgotten device that returns is new again
    gateway = Gateway(service=service, enforcer=guarded, intake=intake, events=events,
                      hook_listener=DhcpHookListener(config.dhcp_socket),
                      maintenance_period=config.maintenance_seconds,
                      violation_period=config.report_seconds, config=config,
                      transparency=transparency_checker(config, service.clock))
    if config.lldp:
        gateway.lldp_listeners += lldp_listeners(config.lan_interface)
    if config.dhcp_range and config.dhcp_sniff:  # the leases of the dnsmasq we run
        from mudguard.discovery.dhcp_sniff import DhcpSniffer

        gateway.dhcp_sniffer = DhcpSniffer.open(config.lan_interface, config.addresses)
    gateway.identifier = identifier  # mDNS/SSDP announcements and DNS names, live
    identifier.evidence.known = functools.partial(_enforced, enforcer)
    if config.identify_announcements:
        from mudguard.discovery.announce_sniff import AnnouncementSniffer

        gateway.announcements = AnnouncementSniffer.open(config.lan_interface,
                                                         identifier.on_frame)
    if lan is not None:  # subscribed now: a port joining during start-up is not missed
        gateway.lan_ports = LanPortWatcher.open(lan)
    if config.neighbours:
        from mudguard.discovery.neighbour import NeighbourWatcher

        gateway.neighbours = NeighbourWatcher.open(config.lan_interface)
    if wifi is not None:
        from mudguard.devices.wiring import KeyEventRecorder

        recorder = KeyEventRecorder(service)
        wifi.on_key_event = lambda event, now: gateway.submit(
            "WiFi key event", functools.partial(recorder, event, now))
        wifi.on_decision = lambda event, decision: events.emit(
            "wifi", mac=event.mac, keyid=event.params.get("keyid"),
            outcome=decision.outcome.value)
        gateway.children.append(wifi)
    if config.dhcp_range or config.dhcp_range6:
        gateway.children.append(Dnsmasq(config))

    address_book = AddressBook(enforcer.installed)
    names = DnsNames()  # the watcher's evidence names what the device looked up
    guarded.on_policy = names.learn
    # Devices resolving with another DNS server are told once per server (RFC 9726);
    # the guard's answers teach it the current addresses of known DoH names.
    resolvers = ResolverWatch(config.addresses, lan_prefixes=config.lan_prefixes)
    base_filler: Any = NftSetFiller()
    if isinstance(enforcer, DataGatewayEnforcer):  # answers become the device's elements
        base_filler = DataSetFiller(enforcer.record_of)
        guarded.refill = base_filler.fill  # a device's grants again under its new rules
    else:
        guarded.fill = base_filler.fill  # the grants restored at start
    if config.dns_upstream:
        from mudguard.daemon.dns_grants import GrantJournal

        gateway.dns_grants = GrantJournal(store, guard)  # grants outlive a restart
        gateway.services.append(DnsServer(
            guard, listen=config.addresses, upstream=Upstream(config.dns_upstream[0]),
            filler=names.filler(TimedFiller(base_filler, metrics) if metrics
                                else base_filler), port=config.dns_port,
            on_answer=resolvers.learn_answer))
    # device_of: conntrack NEW events count per device (a flood of allowed connections
    # leaves no drop log), looked up in what the kernel enforces now.
    learner = LearningRecorder(names) if config.learning else None
    gateway.learning = learner
    guarded.on_device = _both(address_book.invalidate,
                              learner.follow if learner is not None else None)
    guard.on_answer = _answered(learner, identifier, AddressBook(
        enforcer.installed, key=lambda mac: mac))
    gateway.learning_period = config.learning_flush_seconds
    activity = gateway.activity = ActivityLog(address_book, names)
    # address -> MAC for the readers on the event loop (ports, ClientHellos, web flows)
    mac_book = AddressBook(enforcer.installed, key=lambda mac: mac)
    gateway.services.append(Watcher(
        metrics.counting_alerts(gateway.on_alert) if metrics else gateway.on_alert,
        group=config.nflog_group, tracker=tracker, device_of=address_book, names=names,
        resolvers=resolvers, on_dns_elsewhere=gateway.on_dns_elsewhere,
        on_event=metrics.counting_drops(gateway.on_drop) if metrics else gateway.on_drop,
        marks=enforcer.marks if isinstance(enforcer, DataGatewayEnforcer) else None,
        on_connection=_both(_both(activity.on_connection, _port_clues(identifier, mac_book)),
                            learner.on_connection if learner is not None else None)))
    # RFC 9761: the ClientHellos the kernel logs for devices with (D)TLS profiles.
    gateway.tls_alert = metrics.counting_alerts(gateway.on_alert) if metrics else None
    gateway.services.append(TlsWatcher(
        gateway.on_tls, group=config.nflog_group + 1, device_of=address_book,
        mac_of=mac_book))
    # #16: the web flows the kernel logs for devices without a MUD file (SNI, User-Agent,
    # Host, TLS 1.2 server certificates) are clues to their identity (both designs).
    from mudguard.watch.identify_listener import WebWatcher

    gateway.services.append(WebWatcher(
        identifier.on_web, group=config.nflog_group + 2,
        device_of=mac_book,
        lan_interface=config.lan_interface))
    gateway.services.append(ControlServer(config.control_socket, service,
                                          gateway.call_then_follow))
    if config.portal_address:
        from mudguard.portal import PortalServices, PortalSettings, create_app

        issuer = None
        if wifi is not None and config.wifi_ssid is not None:
            from mudguard.portal.wiring import KeyManagerIssuer

            issuer = KeyManagerIssuer(wifi.manager, config.wifi_ssid)
        # Owner changes run on the service worker, serialised with every other device
        # change; any Host but the gateway's own addresses and names is refused.
        hosts = tuple(dict.fromkeys((config.portal_address, *config.addresses,
                                     *config.portal_names)))
        app = create_app(PortalServices(devices=service, keys=issuer,
                                        run=gateway.run_in_worker,
                                        transparency=gateway.transparency,
                                        oui=identifier.oui, knowledge=identifier.kb,
                                        settings_changed=gateway.follow_home_default,
                                        controllers=config.controllers),
                         PortalSettings(state_dir=config.state_dir, allowed_hosts=hosts))
        gateway.services.append(PortalRunner(app, config.portal_address, config.portal_port))
    if metrics is not None and config.metrics_listen is not None:
        from mudguard.daemon.metrics import MetricsServer

        metrics.watch(store=store, enforcer=enforcer, guard=guard,
                      keys=wifi.manager.ring if wifi is not None else None)
        if wifi is not None:
            wifi.on_decision = metrics.counting_decisions(wifi.on_decision)
        gateway.services.append(MetricsServer(metrics.registry, *config.metrics_listen))
    return gateway
