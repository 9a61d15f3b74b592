"""The demo home: its addresses, its devices, what each must be allowed or denied, and
the run directory that holds the test PKI, the served MUD files and the configs.

Addresses (documentation prefixes only, PLATFORM.md):

- home LAN 192.0.2.0/24, the gateway at 192.0.2.1 (DHCP, DNS, portal);
- the gateway's WAN link 203.0.113.0/24 (``mudguard.vhome``);
- the fake Internet's services on 198.51.100.0/24 (DNS 198.51.100.53, the manufacturers'
  HTTPS server 198.51.100.20, the devices' clouds, and 198.51.100.30, a host no device's
  profile names, which every "must be blocked" probe uses by address).

The cloud names are the real ones the corpus MUD files name (``v2.broker.lifx.co``,
``devs.tplinkcloud.com``...): the demo's own DNS server answers them with documentation
addresses inside the namespaces, so nothing ever leaves the machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path

from mudguard.demo import pki
from mudguard.demo.internet import InternetConfig

LAN_PREFIX = "192.0.2.0/24"
GATEWAY_LAN = "192.0.2.1"
DHCP_RANGE = ("192.0.2.100", "192.0.2.199")
INTERNET_DNS = "198.51.100.53"
MUD_SERVER = "198.51.100.20"
ELSEWHERE = "198.51.100.30"
"""An Internet host no profile allows: every device's "must be blocked" probe."""

PRINTER_PORT = 9100  # raw printing (JetDirect), what a LAN computer sends jobs to


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """One connection a device program tries, by name (resolved through the gateway)
    or by address."""

    key: str  # "cloud", "ntp", "elsewhere", "printer", "scan"...
    protocol: str  # "tcp" or "udp"
    port: int
    name: str | None = None
    address: str | None = None
    expect: bool = True  # what the gateway must do while the device is well-behaved

    def describe(self) -> str:
        """``v2.broker.lifx.co:56700/tcp``."""
        return f"{self.name or self.address}:{self.port}/{self.protocol}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoDevice:
    """One device of the home and where its MUD file comes from."""

    key: str
    label: str
    hostname: str
    mud_file: str | None = None  # file in ``demo/mudfiles``
    mud_path: str | None = None  # URL path on the manufacturer's host
    vendor_host: str | None = None
    maker: str | None = None  # ``mfg-name`` the demo maker publishes when the file has none
    model: str | None = None  # ``model-name`` likewise
    signed: bool = False
    supported: bool = True
    flows: tuple[Flow, ...] = ()
    listen_tcp: tuple[int, ...] = ()
    announce: str = "dhcp"  # how it tells its MUD URL: DHCP option 161 or "lldp"

    @property
    def mud_url(self) -> str | None:
        """The MUD URL the device announces (DHCP option 161)."""
        if self.vendor_host is None or self.mud_path is None:
            return None
        return f"https://{self.vendor_host}{self.mud_path}"

    @property
    def signature_url(self) -> str | None:
        """Where its detached signature is served, if it is signed."""
        url = self.mud_url
        return url.removesuffix(".json") + ".p7s" if url and self.signed else None


_ELSEWHERE = Flow(key="elsewhere", protocol="tcp", port=443, address=ELSEWHERE, expect=False)

DEVICES: tuple[DemoDevice, ...] = (
    DemoDevice(key="bulb", label="Smart bulb (LIFX, signed MUD)", hostname="lifx-bulb",
               mud_file="lifxbulbMud.json",
               mud_path="/lifx/bulb.json", vendor_host="mud.lifx.example", signed=True,
               maker="LIFX", model="LIFX Mini",
               flows=(Flow(key="cloud", protocol="tcp", port=56700, name="v2.broker.lifx.co"),
                      Flow(key="ntp", protocol="udp", port=123, name="pool.ntp.org"),
                      _ELSEWHERE)),
    DemoDevice(key="camera", label="Camera (TP-Link, compromised later)",
               hostname="tplink-cam", mud_file="tplinkcameraMud.json",
               mud_path="/tplink/camera.json", vendor_host="mud.tplink.example",
               maker="TP-Link", model="NC200",
               flows=(Flow(key="cloud", protocol="tcp", port=443, name="devs.tplinkcloud.com"),
                      _ELSEWHERE)),
    DemoDevice(key="plug", label="Plug (TP-Link, out of support)", hostname="tplink-plug",
               mud_file="tplinkplugMud.json",
               mud_path="/tplink/plug.json", vendor_host="mud.tplink.example",
               maker="TP-Link", model="HS110", supported=False,
               flows=(Flow(key="cloud", protocol="tcp", port=50443, name="devs.tplinkcloud.com",
                           expect=False),
                      Flow(key="printer", protocol="tcp", port=PRINTER_PORT,
                           name="printer", expect=True),
                      _ELSEWHERE)),
    DemoDevice(key="nomud", label="Gadget with no MUD file", hostname="gadget",
               flows=(Flow(key="cloud", protocol="tcp", port=443, name="cloud.gadget.example",
                           expect=False),)),
    DemoDevice(key="printer", label="Printer (Brother)", hostname="brother-printer",
               mud_file="brother-DCP-L2540DW.json",
               mud_path="/brother/dcp-l2540dw.json", vendor_host="mud.brother.example",
               flows=(Flow(key="cloud", protocol="tcp", port=80, name="update.brother.co.jp"),
                      _ELSEWHERE),
               listen_tcp=(PRINTER_PORT, 631), announce="lldp"),
)

# name -> addresses the fake Internet's DNS answers; (address, port) of every cloud server.
RECORDS: dict[str, list[str]] = {
    "mud.lifx.example": [MUD_SERVER],
    "mud.tplink.example": [MUD_SERVER],
    "mud.brother.example": [MUD_SERVER],
    "v2.broker.lifx.co": ["198.51.100.21"],
    "pool.ntp.org": ["198.51.100.123"],
    "devs.tplinkcloud.com": ["198.51.100.22"],
    "ipc.tplinkcloud.com": ["198.51.100.22"],
    "update.brother.co.jp": ["198.51.100.24"],
    "cloud.gadget.example": ["198.51.100.25"],
    "tracker.example.net": [ELSEWHERE],
}
TCP_SERVERS: list[tuple[str, int]] = [
    ("198.51.100.21", 56700), ("198.51.100.22", 443), ("198.51.100.22", 50443),
    ("198.51.100.22", 80), ("198.51.100.24", 80), ("198.51.100.25", 443),
    (ELSEWHERE, 443), (ELSEWHERE, 80),
]
UDP_SERVERS: list[tuple[str, int]] = [("198.51.100.123", 123), (ELSEWHERE, 80)]


def internet_addresses() -> list[str]:
    """Every address the internet namespace must own."""
    found = {INTERNET_DNS, MUD_SERVER}
    found.update(a for addresses in RECORDS.values() for a in addresses)
    found.update(a for a, _ in TCP_SERVERS + UDP_SERVERS)
    return sorted(found)


def device(key: str) -> DemoDevice:
    """The demo device called ``key``."""
    for candidate in DEVICES:
        if candidate.key == key:
            return candidate
    raise KeyError(key)


def served_mud(dev: DemoDevice) -> bytes:
    """The MUD file the manufacturer serves for ``dev``: the corpus file with its
    ``mud-url`` (and ``mud-signature``, ``is-supported``) set for the demo, and the
    maker's and model's names (``mfg-name``, ``model-name``) where the corpus file,
    written before makers filled them in, has none."""
    assert dev.mud_file is not None and dev.mud_url is not None
    source = resources.files("mudguard.demo").joinpath("mudfiles", dev.mud_file)
    doc = json.loads(source.read_bytes())
    mud = doc["ietf-mud:mud"]
    mud["mud-url"] = dev.mud_url
    mud["is-supported"] = dev.supported
    if dev.maker and "mfg-name" not in mud:
        mud["mfg-name"] = dev.maker
    if dev.model and "model-name" not in mud:
        mud["model-name"] = dev.model
    if dev.signature_url:
        mud["mud-signature"] = dev.signature_url
    else:
        mud.pop("mud-signature", None)
    return json.dumps(doc, indent=2).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDir:
    """The files one demo run made (all under ``root``)."""

    root: Path
    ca_file: Path
    internet_config: Path
    mud_files: dict[str, Path] = field(default_factory=dict)  # device key -> served file


def prepare(root: Path, now: datetime) -> RunDir:
    """Make the test PKI, the served (and signed) MUD files and the internet's config.

    The signing key is used here and never written to disk.
    """
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "pki").mkdir(exist_ok=True)
    ca = pki.make_ca(now)
    hosts = sorted({d.vendor_host for d in DEVICES if d.vendor_host})
    server = pki.issue_server(ca, hosts, now)
    signer = pki.issue_signer(ca, "mudguard demo manufacturer signing key", now)
    ca_file = root / "pki" / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    (root / "pki" / "server.pem").write_bytes(server.cert_pem())
    pki.write_private(root / "pki" / "server.key", server.key_pem())
    files: dict[str, str] = {}
    mud_files: dict[str, Path] = {}
    for dev in DEVICES:
        if dev.mud_path is None:
            continue
        body = served_mud(dev)
        path = root / "www" / f"{dev.key}.json"
        path.write_bytes(body)
        files[dev.mud_path] = str(path)
        mud_files[dev.key] = path
        if dev.signed:
            sig = root / "www" / f"{dev.key}.p7s"
            sig.write_bytes(pki.sign_detached(body, signer))
            files[dev.mud_path.removesuffix(".json") + ".p7s"] = str(sig)
    config = InternetConfig(
        dns_address=INTERNET_DNS, records=RECORDS, https_address=MUD_SERVER, https_port=443,
        cert_file=str(root / "pki" / "server.pem"), key_file=str(root / "pki" / "server.key"),
        files=files, tcp=TCP_SERVERS, udp=UDP_SERVERS)
    internet_config = root / "internet.json"
    internet_config.write_text(config.to_json())
    return RunDir(root=root, ca_file=ca_file, internet_config=internet_config,
                  mud_files=mud_files)
