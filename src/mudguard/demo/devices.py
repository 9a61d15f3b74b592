"""The demo's device programs, one per device namespace:
``python -m mudguard.demo.devices KEY --interface IF``.

Each behaves like the real device it stands for: it gets its address by DHCP,
announcing its MUD URL in option 161; it resolves its cloud's name through the gateway's
DNS and connects to it; it also tries a host its profile does not allow. The camera,
after ``--compromise-after`` seconds, turns hostile: it scans the LAN and floods a host on
the Internet, as a compromised camera in a botnet does.

Devices do not judge: each attempt is reported as one JSON line on stdout
(``{"event": "flow", "flow": "cloud", "ok": true, ...}``) and the demo decides whether
that was the expected outcome. Lines the demo writes on stdin give a device hints a real
one would get from mDNS (``{"hosts": {"printer": "192.0.2.105"}}``), or tell the camera
when to turn hostile (``{"compromise": true}``).

Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

from mudguard.demo import dhcp, scenario

log = logging.getLogger("mudguard.demo.devices")

CONNECT_TIMEOUT = 1.0
SCAN_PORTS = (22, 23, 80, 443)
SCAN_HOSTS = 48  # gateway plus the first addresses of the DHCP range
FLOOD_PACKETS = 300


def emit(**fields: Any) -> None:
    """Report one event as a JSON line on stdout."""
    fields.setdefault("t", round(time.time(), 3))
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


async def tcp_ok(address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """True if a TCP connection to ``address``:``port`` completes in time."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class _UdpOnce(asyncio.DatagramProtocol):
    def __init__(self, answer: asyncio.Future[bytes]) -> None:
        self.answer = answer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def udp_ok(address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """True if a datagram to ``address``:``port`` is echoed back in time."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpOnce(answer),
                                                       remote_addr=(address, port))
    try:
        transport.sendto(b"mudguard-demo")
        return await asyncio.wait_for(answer, timeout) == b"mudguard-demo"
    except (OSError, TimeoutError):
        return False
    finally:
        transport.close()


async def resolve(name: str, server: str) -> str | None:
    """The first A record of ``name`` asked of ``server`` (the gateway), or None."""
    query = dns.message.make_query(name, dns.rdatatype.A)
    try:
        response = await dns.asyncquery.udp(query, server, timeout=CONNECT_TIMEOUT)
    except (dns.exception.DNSException, OSError):
        return None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.A:
            for rdata in rrset:
                return str(rdata.address)
    return None


class DeviceProgram:
    """One device's behaviour after it has its lease."""

    def __init__(self, dev: scenario.DemoDevice, lease: dhcp.Lease, *,
                 compromise_after: float | None) -> None:
        self.dev = dev
        self.lease = lease
        self.hosts: dict[str, str] = {}  # LAN names learnt from hints
        self.compromise_at = (time.monotonic() + compromise_after
                              if compromise_after is not None else None)
        self.compromised = False

    async def try_flow(self, flow: scenario.Flow) -> None:
        """Make one attempt of ``flow`` and report it."""
        address = flow.address
        if address is None and flow.name is not None:
            address = self.hosts.get(flow.name)
            if address is None and "." in flow.name and self.lease.dns:
                address = await resolve(flow.name, self.lease.dns[0])
        if address is None:
            if flow.name in self.hosts or (flow.name and "." in flow.name):
                emit(event="flow", device=self.dev.key, flow=flow.key, dst=flow.describe(),
                     ok=False, stage="dns")
            return
        probe = tcp_ok if flow.protocol == "tcp" else udp_ok
        ok = await probe(address, flow.port)
        emit(event="flow", device=self.dev.key, flow=flow.key, dst=flow.describe(),
             address=address, ok=ok, stage="connect")

    async def attack(self) -> None:
        """What a compromised camera does: scan the LAN, then flood an Internet host."""
        network = ipaddress.IPv4Network(f"{self.lease.address}/{self.lease.prefixlen}",
                                        strict=False)
        first = ipaddress.IPv4Address(scenario.DHCP_RANGE[0])
        targets = [str(network.network_address + 1)]
        targets += [str(first + i) for i in range(SCAN_HOSTS)
                    if str(first + i) != self.lease.address]
        limit = asyncio.Semaphore(64)

        async def knock(host: str, port: int) -> bool:
            async with limit:
                return await tcp_ok(host, port, timeout=0.5)

        results = await asyncio.gather(*(knock(h, p) for h in targets for p in SCAN_PORTS))
        emit(event="scan", device=self.dev.key, probes=len(results), open=sum(results))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=(scenario.ELSEWHERE, 80))
        try:
            for i in range(FLOOD_PACKETS):
                transport.sendto(b"x" * 512)
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
        finally:
            transport.close()
        emit(event="flood", device=self.dev.key, target=f"{scenario.ELSEWHERE}:80/udp",
             packets=FLOOD_PACKETS)

    async def round(self) -> None:
        """One round of normal behaviour (and the attack once compromised)."""
        await asyncio.gather(*(self.try_flow(f) for f in self.dev.flows))
        if self.compromise_at is not None and time.monotonic() >= self.compromise_at:
            if not self.compromised:
                self.compromised = True
                emit(event="compromised", device=self.dev.key)
            await self.attack()

    def hint(self, line: str) -> None:
        """Take a hint line from the demo (LAN names a real device would learn by mDNS)."""
        try:
            hint = json.loads(line)
            hosts = dict(hint.get("hosts", {}))
        except (ValueError, AttributeError, TypeError):
            return
        if hint.get("compromise") and self.compromise_at is None:
            self.compromise_at = time.monotonic()
        for name, address in hosts.items():
            with contextlib.suppress(ValueError):
                self.hosts[str(name)] = str(ipaddress.ip_address(address))


async def _serve_ports(ports: tuple[int, ...]) -> list[asyncio.AbstractServer]:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ready\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    return [await asyncio.start_server(greet, "0.0.0.0", port) for port in ports]  # noqa: S104


async def _read_hints(program: DeviceProgram) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        program.hint(line.decode(errors="replace"))


def announce_lldp(interface: str, mac: str, mud_url: str, system_name: str) -> None:
    """Send one LLDP frame with the MUD URL TLV (RFC 8520 §11), as wired printers do."""
    import socket

    from mudguard.discovery.lldp import build_lldp_frame

    frame = build_lldp_frame(mac, mud_url=mud_url, system_name=system_name)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        sock.send(frame)


def configure(interface: str, lease: dhcp.Lease) -> None:
    """Put the leased address and the default route on the device's interface."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=interface)[0]
        # "replace": idempotent, as a DHCP client's renewal must be.
        ipr.addr("replace", index=index, address=lease.address, prefixlen=lease.prefixlen)
        if lease.router:
            ipr.route("replace", dst="0.0.0.0/0", gateway=lease.router)


async def live(program: DeviceProgram, period: float, lifetime: float) -> None:
    """Run rounds every ``period`` seconds until ``lifetime`` has passed."""
    servers = await _serve_ports(program.dev.listen_tcp)
    hints = asyncio.create_task(_read_hints(program))
    end = time.monotonic() + lifetime
    try:
        while time.monotonic() < end:
            started = time.monotonic()
            await program.round()
            await asyncio.sleep(max(0.0, min(period - (time.monotonic() - started),
                                             end - time.monotonic())))
    finally:
        hints.cancel()
        for server in servers:
            server.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: obtain a lease, configure it, then behave."""
    parser = argparse.ArgumentParser(description="A demo device program.")
    parser.add_argument("device", choices=[d.key for d in scenario.DEVICES])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--period", type=float, default=2.0)
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--compromise-after", type=float, default=None)
    args = parser.parse_args(argv)
    dev = scenario.device(args.device)
    mac = Path(f"/sys/class/net/{args.interface}/address").read_text().strip()
    by_lldp = dev.announce == "lldp"
    try:
        lease = dhcp.obtain(args.interface, mac, hostname=dev.hostname,
                            mud_url=None if by_lldp else dev.mud_url)
    except (dhcp.DhcpError, OSError) as exc:
        emit(event="error", device=dev.key, error=f"DHCP: {exc}")
        return 1
    configure(args.interface, lease)
    emit(event="lease", device=dev.key, address=lease.address, router=lease.router,
         dns=list(lease.dns), mud_url=None if by_lldp else dev.mud_url)
    if by_lldp and dev.mud_url:
        announce_lldp(args.interface, mac, dev.mud_url, dev.hostname)
        emit(event="lldp", device=dev.key, mud_url=dev.mud_url)
    program = DeviceProgram(dev, lease, compromise_after=args.compromise_after)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(live(program, args.period, args.lifetime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
