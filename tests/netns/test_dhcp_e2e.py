"""Onboarding end to end in the virtual home, with every real component:

busybox udhcpc (device namespace) sends option 161 → dnsmasq (gateway namespace)
leases and runs ``mudguard-dhcp-hook`` → JSON over a unix socket →
``DhcpHookListener`` → ``Intake`` → ``DeviceService.observe``: fetch over HTTPS from
the fake Internet's manufacturer server (``mudguard.demo.internet``, test CA) →
detached CMS signature check → ``decide`` + compile → ``Enforcer`` applies one nft
batch in the gateway namespace → the device row is stored. Then the device's real
traffic shows the profile is enforced: its cloud service answers, another host
does not.

``OnboardHome`` is shared with ``bench/bench_onboard.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mudguard.devices import Device
from mudguard.devices.service import DeviceService
from mudguard.discovery.dhcp import SOCKET_ENV, DhcpHookListener
from mudguard.discovery.sighting import Intake
from mudguard.store import Store
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, run
from mudguard.vhome._home import GW4, GW6, LAN4, LAN6
from mudguard.vhome._netns import enter

pytestmark = pytest.mark.root

MUD_HOST = "mud.example.com"
CLOUD4 = INTERNET_HOSTS["cloud"][0]
OTHER4 = INTERNET_HOSTS["other"][0]
MFG4 = INTERNET_HOSTS["mfg"][0]
DNS4 = INTERNET_HOSTS["dns"][0]
HOOK = Path(sys.executable).with_name("mudguard-dhcp-hook")


def mud_document(url: str, signature_url: str) -> dict[str, Any]:
    """A device that may open TCP 443 to its cloud server (IPv4) and nothing else."""
    def ace(name: str, ip: dict[str, Any], tcp: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "matches": {"ipv4": {"protocol": 6, **ip}, "tcp": tcp},
                "actions": {"forwarding": "accept"}}
    port = {"operator": "eq", "port": 443}
    return {
        "ietf-mud:mud": {
            "mud-version": 1, "mud-url": url, "last-update": "2026-11-01T00:00:00+00:00",
            "cache-validity": 48, "is-supported": True, "systeminfo": "mgl test plug",
            "mfg-name": "Example", "model-name": "plug", "mud-signature": signature_url,
            "from-device-policy": {"access-lists": {"access-list": [{"name": "from4"}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": "to4"}]}}},
        "ietf-access-control-list:acls": {"acl": [
            {"name": "from4", "type": "ipv4-acl-type", "aces": {"ace": [
                ace("cloud", {"destination-ipv4-network": f"{CLOUD4}/32"},
                    {"destination-port": port})]}},
            {"name": "to4", "type": "ipv4-acl-type", "aces": {"ace": [
                ace("cloud-back", {"source-ipv4-network": f"{CLOUD4}/32"},
                    {"source-port": port})]}}]},
    }


@dataclass
class Onboarded:
    """One device's onboarding, with monotonic timestamps (one clock for all processes)."""

    device: Device | None
    dhcp_start: float
    dhcp_done: float
    hook_received: float = 0.0
    enforced: float = 0.0
    fetch_seconds: float = 0.0
    lease_ip: str | None = None
    error: str | None = None

    @property
    def processing(self) -> float:
        """Hook message in → rules enforced and stored, minus the fetch's network time."""
        return self.enforced - self.hook_received - self.fetch_seconds


@dataclass
class OnboardHome:
    """The virtual home, fake Internet, dnsmasq and an in-process gateway pipeline."""

    root: Path
    devices: int = 1
    home: VirtualHome = field(init=False)
    service: DeviceService = field(init=False)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _fetch_time: float = 0.0

    def __enter__(self) -> OnboardHome:
        self.home = VirtualHome(prefix=f"mgl{os.getpid() % 10000}", devices=self.devices)
        self.home.__enter__()
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if hasattr(self, "listener"):
            self.listener.close()
        if hasattr(self, "store"):
            self.store.close()
        self.home.__exit__(None, None, None)

    # -- set-up ---------------------------------------------------------------------------

    def _start(self) -> None:
        from mudguard.demo import pki

        now = datetime.now(UTC)
        ca = pki.make_ca(now)
        server = pki.issue_server(ca, [MUD_HOST], now)
        signer = pki.issue_signer(ca, "Example MUD signer", now)
        (self.root / "ca.pem").write_bytes(ca.cert_pem())
        (self.root / "server.pem").write_bytes(server.cert_pem())
        pki.write_private(self.root / "server.key", server.key_pem())
        files: dict[str, str] = {}
        self.urls: list[str] = []
        for i in range(self.devices):
            url = f"https://{MUD_HOST}/plug{i}.json"
            data = json.dumps(mud_document(url, url[:-5] + ".p7s"), indent=1).encode()
            (self.root / f"plug{i}.json").write_bytes(data)
            (self.root / f"plug{i}.p7s").write_bytes(pki.sign_detached(data, signer))
            files[f"/plug{i}.json"] = str(self.root / f"plug{i}.json")
            files[f"/plug{i}.p7s"] = str(self.root / f"plug{i}.p7s")
            self.urls.append(url)
        index = {"entries": [{"oui": self.home.nodes[0].mac[:8], "mud_url": self.urls[0]}]}
        (self.root / "index.json").write_text(json.dumps(index))
        files["/repo/index.json"] = str(self.root / "index.json")
        self._start_internet(files)
        self._start_dnsmasq()
        self._build_gateway()

    def _start_internet(self, files: dict[str, str]) -> None:
        from mudguard.demo.internet import InternetConfig

        config = InternetConfig(
            dns_address=DNS4, records={MUD_HOST: [MFG4]}, https_address=MFG4, https_port=443,
            cert_file=str(self.root / "server.pem"), key_file=str(self.root / "server.key"),
            files=files, tcp=[(CLOUD4, 443), (OTHER4, 443)])
        (self.root / "internet.json").write_text(config.to_json())
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.home.inet_ns, sys.executable, "-m",
             "mudguard.demo.internet", str(self.root / "internet.json"), "--lifetime", "300"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready", or EOF if it died
        if line.strip() != b"ready":
            raise RuntimeError("the fake Internet did not start")

    def _start_dnsmasq(self) -> None:
        for node in self.home.nodes:  # devices get their address by DHCP
            run(["ip", "-4", "addr", "flush", "dev", node.iface], ns=node.ns)
        self.listener = DhcpHookListener(self.root / "dhcp.sock")
        argv = ["ip", "netns", "exec", self.home.gw_ns, shutil.which("dnsmasq") or "dnsmasq",
                "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                f"--interface={self.home.lan_if}", "--bind-interfaces", "--no-ping",
                f"--dhcp-range={LAN4[100]},{LAN4[199]},255.255.255.0,1h",
                f"--dhcp-option=option:router,{GW4}",
                f"--dhcp-script={HOOK}", f"--dhcp-leasefile={self.root / 'leases'}",
                f"--dhcp-hostsfile={self.root / 'dhcp-hosts'}",
                f"--pid-file={self.root / 'dnsmasq.pid'}", "--user=root", "--group=root"]
        (self.root / "dhcp-hosts").write_text("")
        self._procs.append(subprocess.Popen(
            argv, env={**os.environ, SOCKET_ENV: str(self.listener.path)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _build_gateway(self) -> None:
        import ipaddress

        from mudguard.app import MudFetcher, signature_verifier, upstream_resolver
        from mudguard.enforce import Enforcer, Nft
        from mudguard.mud.fetch import FetchConfig
        from mudguard.policy import HomeContext

        context = HomeContext(lan_prefixes=(str(LAN4), str(LAN6)),
                              gateway_addresses=(GW4, GW6), lan_interface=self.home.lan_if,
                              wan_interface=self.home.wan_if)
        self.enforcer = Enforcer(Nft.in_namespace(self.home.gw_ns), context)
        self.enforcer.install_home()
        fetcher = MudFetcher(FetchConfig(
            ca_bundle=self.root / "ca.pem", resolver=upstream_resolver([DNS4]),
            blocked_prefixes=(ipaddress.ip_network(LAN4), ipaddress.ip_network(LAN6))))

        def timed_fetch(url: str) -> bytes:
            start = time.monotonic()
            try:
                return fetcher(url)
            finally:
                self._fetch_time += time.monotonic() - start

        self.store = Store(self.root / "mudguard.db")
        self.service = DeviceService(store=self.store, fetch=timed_fetch,
                                     verify=signature_verifier(self.root / "ca.pem"),
                                     enforcer=self.enforcer)
        self.intake = Intake(self.service)

    # -- one onboarding -------------------------------------------------------------------

    def onboard(self, index: int, *, announce: bool = True) -> Onboarded:
        """Run the device's DHCP client (with option 161 if ``announce``) and the
        gateway's pipeline; return the timings."""
        node = self.home.nodes[index]
        result = Onboarded(device=None, dhcp_start=0.0, dhcp_done=0.0)
        thread = threading.Thread(target=self._gateway_side, args=(result,))
        thread.start()
        try:
            result.dhcp_start = time.monotonic()
            option = ["-x", f'0xa1:"{self.urls[index]}"'] if announce else []
            proc = run(["busybox", "udhcpc", "-i", node.iface, "-f", "-q", "-n", "-t", "5",
                        "-T", "1", "-s", "/bin/true", *option], ns=node.ns, timeout=20)
            result.dhcp_done = time.monotonic()
            for line in proc.stderr.splitlines():
                if "lease of " in line:
                    result.lease_ip = line.split("lease of ")[1].split()[0]
        finally:
            thread.join(timeout=30)
        return result

    def _gateway_side(self, result: Onboarded) -> None:
        try:
            enter(self.home.gw_ns)  # this thread only: the fetch leaves by the gateway's WAN
            sighting = self.listener.receive(timeout=20)
            result.hook_received = time.monotonic()
            if sighting is None:
                result.error = "no hook message"
                return
            self._fetch_time = 0.0
            result.device = self.intake.on_sighting(sighting)
            result.enforced = time.monotonic()
            result.fetch_seconds = self._fetch_time
        except Exception as exc:  # reported to the test, which fails with it
            result.error = f"{type(exc).__name__}: {exc}"

    def in_gateway(self, fn: Any) -> Any:
        """Run ``fn()`` on a thread inside the gateway namespace; return its result."""
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                enter(self.home.gw_ns)
                box["value"] = fn()
            except BaseException as exc:  # re-raised in the caller
                box["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        thread.join(timeout=60)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def configure(self, index: int, address: str) -> None:
        """Give the device the leased address (udhcpc ran with a no-op script)."""
        node = self.home.nodes[index]
        run(["ip", "addr", "add", f"{address}/24", "dev", node.iface], ns=node.ns)
        run(["ip", "route", "replace", "default", "via", GW4], ns=node.ns)


@pytest.fixture
def onboard_home(tmp_path: Path) -> OnboardHome:
    for binary in ("dnsmasq", "busybox"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (scripts/setup.sh installs it)")
    if not HOOK.is_file():
        pytest.skip(f"{HOOK} missing: run pip install -e . to create the entry point")
    with OnboardHome(tmp_path) as home:
        yield home


def test_lease_to_enforced_profile(onboard_home: OnboardHome) -> None:
    home = onboard_home
    result = home.onboard(0)
    assert result.error is None, result.error
    device = result.device
    assert device is not None and result.lease_ip is not None
    assert device.state.value == "profiled", device.reasons
    assert device.signature_status.value == "signed_valid"
    assert device.signer and "Example MUD signer" in device.signer
    assert device.ipv4 == (result.lease_ip,)
    assert home.store.get_device(device.mac) == device
    home.configure(0, result.lease_ip)
    ns = home.home.nodes[0].ns
    assert home.home.tcp(ns, CLOUD4, 443)  # what the MUD file allows
    assert not home.home.tcp(ns, OTHER4, 443)  # anything else is dropped
    assert result.processing < 2.0


def test_tampered_mud_file_is_not_enforced(onboard_home: OnboardHome) -> None:
    home = onboard_home
    path = home.root / "plug0.json"
    path.write_bytes(path.read_bytes().replace(b"mgl test plug", b"mgl evil plug"))
    result = home.onboard(0)
    assert result.error is None, result.error
    device = result.device
    assert device is not None and device.state.value == "default"
    assert device.signature_status.value == "invalid" and device.profile_hash is None
    assert "signature-invalid" in [e.kind.value for e in home.store.list_events(device.mac)]
    # The home default (Internet only) applies instead: the same probe that the
    # profile blocked now passes, so that block came from the profile.
    assert result.lease_ip is not None
    home.configure(0, result.lease_ip)
    assert home.home.tcp(home.home.nodes[0].ns, OTHER4, 443)


def test_device_without_mud_url_found_in_https_repository(onboard_home: OnboardHome) -> None:
    from mudguard.devices.repository import load_repositories

    home = onboard_home
    home.service.repositories = load_repositories(
        [f"https://{MUD_HOST}/repo/index.json"], home.service.fetch)
    result = home.onboard(0, announce=False)
    assert result.error is None, result.error
    device = result.device
    assert device is not None and device.state.value == "profiled", device and device.reasons
    assert device.mud_source is not None and device.mud_source.value == "repository"
    assert device.mud_url == home.urls[0] and device.signature_status.value == "signed_valid"
    assert result.lease_ip is not None
    home.configure(0, result.lease_ip)
    ns = home.home.nodes[0].ns
    assert home.home.tcp(ns, CLOUD4, 443) and not home.home.tcp(ns, OTHER4, 443)


def test_refresh_with_a_tampered_file_keeps_the_enforced_profile(
        onboard_home: OnboardHome) -> None:
    import dataclasses

    home = onboard_home
    result = home.onboard(0)
    assert result.device is not None and result.lease_ip is not None
    good = result.device
    cached = home.store.get_mud(home.urls[0])
    assert cached is not None
    # The cache expired and the manufacturer's server now serves a modified file.
    home.store.put_mud(dataclasses.replace(cached, fetched_at=datetime(2020, 1, 1, tzinfo=UTC)))
    path = home.root / "plug0.json"
    path.write_bytes(path.read_bytes().replace(b'"port": 443', b'"port": 444'))
    after = home.in_gateway(lambda: home.service.refresh(good.mac))
    assert after.state.value == "profiled" and after.profile_hash == good.profile_hash
    assert home.store.get_mud(home.urls[0]).data == cached.data  # not replaced
    assert "signature-invalid" in [e.kind.value for e in home.store.list_events(good.mac)]
    home.configure(0, result.lease_ip)
    ns = home.home.nodes[0].ns
    assert home.home.tcp(ns, CLOUD4, 443) and not home.home.tcp(ns, OTHER4, 443)


def test_a_renewed_lease_at_another_address_is_enforced(onboard_home: OnboardHome) -> None:
    home = onboard_home
    first = home.onboard(0)
    assert first.device is not None and first.lease_ip is not None
    node = home.home.nodes[0]
    # The home's DHCP server is told to give the device another address (dnsmasq
    # rereads its hosts file on SIGHUP); the device gives its lease back and asks again.
    (home.root / "dhcp-hosts").write_text(f"{node.mac},{LAN4[180]}\n")
    os.kill(int((home.root / "dnsmasq.pid").read_text()), signal.SIGHUP)
    run(["busybox", "udhcpc", "-i", node.iface, "-f", "-q", "-n", "-R", "-t", "5", "-T", "1",
         "-s", "/bin/true"], ns=node.ns, timeout=20)
    while home.listener.receive(timeout=0.3) is not None:  # drain (bounded by the socket)
        pass
    moved = home.onboard(0)
    assert moved.error is None, moved.error
    assert moved.lease_ip == str(LAN4[180]) != first.lease_ip
    device = home.store.get_device(first.device.mac)
    assert device is not None and device.ipv4 == (moved.lease_ip,)
    assert device.state.value == "profiled"
    home.configure(0, moved.lease_ip)
    ns = home.home.nodes[0].ns
    run(["ip", "addr", "del", f"{first.lease_ip}/24", "dev", home.home.nodes[0].iface],
        ns=ns, check=False)
    assert home.home.tcp(ns, CLOUD4, 443) and not home.home.tcp(ns, OTHER4, 443)


def _release_lease(node: Any, timeout: float = 20.0) -> None:
    """The device's DHCP client takes a lease and gives it back (udhcpc releases on
    SIGUSR2 while bound: ``-q -R`` quits before it is bound and releases nothing)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", node.ns, "busybox", "udhcpc", "-i", node.iface, "-f", "-t", "5",
         "-T", "1", "-s", "/bin/true"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line or "lease of " in line:
                break
        proc.send_signal(signal.SIGUSR2)
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line or "entering released state" in line:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_a_released_lease_given_to_another_device_leaves_the_first(tmp_path: Path) -> None:
    """dnsmasq's own ``del`` (the device released its lease) takes the address off the
    device at once; the address, leased to another device next, is that device's only."""
    for binary in ("dnsmasq", "busybox"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (scripts/setup.sh installs it)")
    if not HOOK.is_file():
        pytest.skip(f"{HOOK} missing: run pip install -e . to create the entry point")
    with OnboardHome(tmp_path, devices=2) as home:
        x, y = home.home.nodes
        first = home.onboard(0)
        assert first.error is None and first.lease_ip is not None, first.error
        lease = first.lease_ip
        home.configure(0, lease)
        assert home.home.tcp(x.ns, CLOUD4, 443)
        _release_lease(x)  # dnsmasq runs the hook with "del"

        def handle_hook_messages() -> list[bool]:
            """Every hook message, handled as the daemon does, until the release."""
            seen: list[bool] = []
            for _ in range(8):  # bounded: a renewal and its release are a few messages
                sighting = home.listener.receive(timeout=3.0)
                if sighting is None:
                    break
                home.intake.on_sighting(sighting)
                seen.append(sighting.lease_ended)
                if sighting.lease_ended:
                    break
            return seen

        assert home.in_gateway(handle_hook_messages)[-1:] == [True]
        assert home.store.get_device(x.mac).ipv4 == ()  # type: ignore[union-attr]
        assert not home.home.tcp(x.ns, CLOUD4, 443, 0.5)  # X still uses it: dropped
        # The DHCP server hands the address to Y next.
        (home.root / "dhcp-hosts").write_text(f"{y.mac},{lease}\n")
        os.kill(int((home.root / "dnsmasq.pid").read_text()), signal.SIGHUP)
        second = home.onboard(1)
        assert second.error is None and second.lease_ip == lease, second.error
        assert home.store.get_device(y.mac).ipv4 == (lease,)  # type: ignore[union-attr]
        assert home.store.get_device(x.mac).ipv4 == ()  # type: ignore[union-attr]
        assert not home.home.tcp(x.ns, CLOUD4, 443, 0.5)  # X spoofing Y's address
        run(["ip", "addr", "del", f"{lease}/24", "dev", x.iface], ns=x.ns)
        home.configure(1, lease)
        assert home.home.tcp(y.ns, CLOUD4, 443) and not home.home.tcp(y.ns, OTHER4, 443, 0.5)
