"""The demo's fake Internet, run inside the internet namespace:
``python -m mudguard.demo.internet CONFIG.json``.

Three kinds of real servers, all on documentation addresses of that namespace:

- an authoritative DNS server (dnspython wire format, UDP and TCP) that answers A and
  AAAA for the demo's names and NXDOMAIN for everything else, so the gateway's DNS
  guard has a real upstream;
- the manufacturers' HTTPS server (uvicorn + Starlette, TLS with the demo's test CA)
  serving MUD files and their detached signatures;
- the devices' "cloud" servers: TCP servers that greet and close, UDP servers that echo,
  on every address and port a device might try (allowed or not), so that a failed
  connection in the demo always means "the gateway blocked it", never "nobody listens".

The configuration is a JSON file written by the demo (``InternetConfig``). The process
prints ``ready`` on stdout once every socket listens, and runs until terminated or until
``lifetime`` seconds have passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import ssl
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger("mudguard.demo.internet")

DNS_TTL = 300
"""TTL of every answer (long enough that the demo never races an expiry)."""

MUD_CONTENT_TYPE = "application/mud+json"  # the media type RFC 8520 registers
SIGNATURE_CONTENT_TYPE = "application/pkcs7-signature"


@dataclass(frozen=True, slots=True, kw_only=True)
class InternetConfig:
    """Everything the fake Internet serves (JSON in the run directory)."""

    dns_address: str
    records: Mapping[str, list[str]]  # lower-case name without trailing dot -> addresses
    https_address: str
    https_port: int
    cert_file: str
    key_file: str
    files: Mapping[str, str]  # URL path ("/lights/bulb.json") -> file on disk
    tcp: list[tuple[str, int]] = field(default_factory=list)
    udp: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> str:
        """Serialise for the run directory."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InternetConfig:
        """Read back what ``to_json`` wrote."""
        raw = json.loads(text)
        raw["tcp"] = [(a, int(p)) for a, p in raw.get("tcp", [])]
        raw["udp"] = [(a, int(p)) for a, p in raw.get("udp", [])]
        return cls(**raw)


# --- DNS: pure answer function ------------------------------------------------------------

def dns_answer(wire: bytes, records: Mapping[str, list[str]]) -> bytes | None:
    """The authoritative answer to one DNS query in wire format.

    Known names get their A or AAAA records (an empty NOERROR answer for the other
    type); unknown names get NXDOMAIN. A query that does not parse gets FORMERR if its
    header is readable, and no answer at all otherwise (the nanonameserver rule).
    """
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return _formerr(wire)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    addresses = records.get(name)
    if addresses is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
    wanted = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
    matching = [a for a in addresses if ipaddress.ip_address(a).version == wanted]
    if matching:
        response.answer.append(dns.rrset.from_text_list(
            question.name, DNS_TTL, dns.rdataclass.IN, question.rdtype, matching))
    return response.to_wire()


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    header = bytearray(wire[:12])
    header[2] = 0x80 | (header[2] & 0x01)  # QR set, opcode QUERY, keep RD
    header[3] = dns.rcode.FORMERR
    header[4:12] = bytes(8)  # no sections
    return bytes(header)


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, records: Mapping[str, list[str]]) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = dns_answer(data, self.records)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


async def _dns_tcp(records: Mapping[str, list[str]], reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(16):  # a few queries per connection, then close
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            answer = dns_answer(await asyncio.wait_for(reader.readexactly(size), 5), records)
            if answer is None:
                break
            writer.write(len(answer).to_bytes(2, "big") + answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


# --- cloud servers -------------------------------------------------------------------------

async def _greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    host, port = writer.get_extra_info("sockname")[:2]
    try:
        writer.write(f"hello from {host}:{port}\n".encode())
        await writer.drain()
        # Read what the device says (bounded), so a device can tell a real exchange.
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(reader.read(1024), 2)
    finally:
        writer.close()


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data[:2048], addr)


# --- HTTPS manufacturer server -------------------------------------------------------------

def https_app(files: Mapping[str, str]) -> object:
    """A Starlette app that serves ``files`` (URL path -> file) and 404 for the rest."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def serve(request: Request) -> Response:
        path = request.url.path
        source = files.get(path)
        if source is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        kind = SIGNATURE_CONTENT_TYPE if path.endswith(".p7s") else MUD_CONTENT_TYPE
        return Response(Path(source).read_bytes(), media_type=kind)

    return Starlette(routes=[Route("/{path:path}", serve, methods=["GET"])])


async def serve(config: InternetConfig, lifetime: float) -> None:
    """Start every server, print ``ready``, and run until stopped or ``lifetime`` ends."""
    import uvicorn

    loop = asyncio.get_running_loop()
    closers: list[asyncio.AbstractServer | asyncio.BaseTransport] = []
    udp, _ = await loop.create_datagram_endpoint(lambda: _DnsUdp(config.records),
                                                 local_addr=(config.dns_address, 53))
    closers.append(udp)
    closers.append(await asyncio.start_server(
        lambda r, w: _dns_tcp(config.records, r, w), config.dns_address, 53))
    for address, port in config.tcp:
        closers.append(await asyncio.start_server(_greet, address, port))
    for address, port in config.udp:
        transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(address, port))
        closers.append(transport)

    ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ssl_context.load_cert_chain(config.cert_file, config.key_file)
    server = uvicorn.Server(uvicorn.Config(
        https_app(config.files), host=config.https_address, port=config.https_port,  # type: ignore[arg-type]
        ssl_certfile=config.cert_file, ssl_keyfile=config.key_file,
        log_level="warning", access_log=False, lifespan="off"))
    # uvicorn takes SIGINT/SIGTERM while it serves: a signal ends ``serve()`` and is then
    # re-raised with the default action, which ends this process.
    https_task = asyncio.create_task(server.serve())
    for _ in range(100):  # up to 5 s for uvicorn to bind
        if server.started or https_task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        raise RuntimeError("the HTTPS manufacturer server did not start")
    print("ready", flush=True)
    done, _ = await asyncio.wait({https_task}, timeout=lifetime)
    if not done:
        server.should_exit = True
        await https_task
    for closer in closers:
        closer.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m mudguard.demo.internet CONFIG [--lifetime S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--lifetime", type=float, default=3600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = InternetConfig.from_json(args.config.read_text())
    asyncio.run(serve(config, args.lifetime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
