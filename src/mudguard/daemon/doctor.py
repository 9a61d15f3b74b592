"""``mudguard doctor``: does this machine have what the gateway needs, and if not, what to do.

Theory of operation. Each check returns a ``Check`` (name, status, what was found, how to
fix it). The judging is pure, on text and numbers (``nft --version``, ``dnsmasq
--version``, ``hostapd -v``, ``/proc/self/status``' capability mask, ``/proc/net/*``
listeners, the clock); the probes that gather them are thin. The kernel is probed for
real, never guessed from a version: a throwaway network namespace gets one small
nftables table per feature mudguard uses (concatenated sets with timeouts, verdict maps,
``ct state``, ``log group``) and a throwaway bridge with a veth port set ``isolated
on``; the namespace is deleted afterwards. A failed required check makes the run fail
(exit 1); a warning (no flowtable support, an unknown NTP state, no radio) does not.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from mudguard.daemon.config import GatewayConfig
from mudguard.enforce.conntrack_acct import read_accounting

CLOCK_FLOOR = datetime(2026, 1, 1, tzinfo=UTC)  # this release's year: an earlier clock is wrong
MIN_NFT = (1, 0, 0)
MIN_DNSMASQ = (2, 81)
MIN_HOSTAPD = (2, 9)
CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_NET_BIND_SERVICE": 10}
PROBE_TIMEOUT = 10.0


class Status(StrEnum):
    """A check's outcome: ``fail`` makes ``mudguard doctor`` exit 1, ``warn`` does not."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    """One thing the gateway needs: whether this machine has it, and how to get it."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {k: str(v) for k, v in asdict(self).items()}


def passed(checks: Iterable[Check]) -> bool:
    """True when no check failed (warnings allowed)."""
    return all(c.status is not Status.FAIL for c in checks)


# -- pure parsers -------------------------------------------------------------------------


def version_tuple(text: str) -> tuple[int, ...] | None:
    """The first dotted version number in ``text`` (``"nftables v1.0.6 (…)"`` → (1, 0, 6))."""
    found = re.search(r"\bv?(\d+(?:\.\d+)+)", text)
    return tuple(int(p) for p in found.group(1).split(".")) if found else None


def dnsmasq_options(text: str) -> set[str]:
    """The compile-time options of ``dnsmasq --version`` (``no-X`` marks an absent X)."""
    found = re.search(r"Compile time options:(.*)", text)
    return set(found.group(1).split()) if found else set()


def capability_mask(status_text: str) -> int:
    """``CapEff`` of a ``/proc/<pid>/status`` text."""
    found = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status_text, re.M)
    return int(found.group(1), 16) if found else 0


@dataclass(frozen=True, slots=True)
class Listener:
    """A listening socket from ``/proc/net/{tcp,udp}{,6}``."""

    proto: str  # "tcp" or "udp"
    address: str
    port: int
    inode: int


def proc_net_listeners(text: str, proto: str, *, ipv6: bool) -> list[Listener]:
    """Listening (TCP state 0A) or bound (UDP state 07) sockets of one ``/proc/net`` table."""
    wanted = "0A" if proto == "tcp" else "07"
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != wanted:
            continue
        hex_addr, hex_port = fields[1].split(":")
        out.append(Listener(proto, _proc_address(hex_addr, ipv6), int(hex_port, 16),
                            int(fields[9])))
    return out


def _proc_address(hex_addr: str, ipv6: bool) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    fixed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.IPv6Address(fixed) if ipv6 else ipaddress.IPv4Address(fixed))


# -- pure judges ----------------------------------------------------------------------------


def judge_capabilities(euid: int, mask: int) -> Check:
    """Root with the network capabilities the daemon uses."""
    missing = [name for name, bit in CAPABILITIES.items() if not mask >> bit & 1]
    if euid == 0 and not missing:
        return Check("privileges", Status.OK, "root with " + ", ".join(CAPABILITIES))
    what = f"uid {euid}" + (f", missing {', '.join(missing)}" if missing else "")
    return Check("privileges", Status.FAIL, what,
                 "run as root with CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE "
                 "(sudo mudguard …; a systemd unit: no CapabilityBoundingSet narrower "
                 "than these)")


def judge_nft(version_text: str | None) -> Check:
    """The nft tool: present and new enough."""
    if version_text is None:
        return Check("nft", Status.FAIL, "nft not found on PATH",
                     "apt install nftables libnftables1")
    version = version_tuple(version_text)
    if version is None or version < MIN_NFT:
        return Check("nft", Status.FAIL, f"{version_text.strip()[:80]} (need "
                     f"{_dotted(MIN_NFT)}+)", "upgrade nftables (Debian 12: 1.0.6)")
    return Check("nft", Status.OK, version_text.strip().splitlines()[0])


def judge_dnsmasq(version_text: str | None, *, mud_url: bool, needed: bool) -> Check:
    """dnsmasq with DHCP, DHCPv6, and the MUD URL (option 161/112) passed to its script."""
    fix = "apt install dnsmasq-base (2.90 in Debian 12)"
    bad = Status.FAIL if needed else Status.WARN
    if version_text is None:
        return Check("dnsmasq", bad, "dnsmasq not found on PATH", fix)
    version = version_tuple(version_text) or ()
    options = dnsmasq_options(version_text)
    missing = [o for o in ("DHCP", "DHCPv6") if o not in options]
    first = version_text.strip().splitlines()[0][:60]
    if missing:
        return Check("dnsmasq", bad, f"{first}: built without {', '.join(missing)}", fix)
    if version < MIN_DNSMASQ or not mud_url:
        return Check("dnsmasq", bad, f"{first}: does not pass the DHCP MUD URL to its "
                     "script (DNSMASQ_MUD_URL)", f"{fix}; {_dotted(MIN_DNSMASQ)} or later")
    return Check("dnsmasq", Status.OK, f"{first}, DHCP, DHCPv6, MUD URL")


def judge_hostapd(version_text: str | None, *, nl80211: bool, needed: bool,
                  radio: str | None) -> Check:
    """hostapd new enough for per-device keys (``wpa_psk_file`` with ``keyid=``), its
    nl80211 driver, and (when WiFi is configured) a radio interface."""
    fix = "apt install hostapd (2.10 in Debian 12)"
    bad = Status.FAIL if needed else Status.WARN
    if version_text is None:
        return Check("hostapd", bad, "hostapd not found on PATH"
                     + ("" if needed else " (only needed for per-device WiFi keys)"), fix)
    version = version_tuple(version_text) or ()
    first = version_text.strip().splitlines()[0][:40]
    if version < MIN_HOSTAPD:
        return Check("hostapd", bad, f"{first}: per-device keys need "
                     f"{_dotted(MIN_HOSTAPD)}+", fix)
    if not nl80211:
        return Check("hostapd", bad, f"{first}: built without the nl80211 driver",
                     "install a hostapd built with CONFIG_DRIVER_NL80211")
    if radio is not None:
        return Check("hostapd", bad if needed else Status.WARN,
                     f"{first}, nl80211; but {radio}",
                     "set wifi.interface to the radio (iw dev lists them)")
    return Check("hostapd", Status.OK, f"{first}, nl80211 driver")


def judge_clock(now: datetime, synced: bool | None) -> Check:
    """A clock that signature and certificate checks can trust."""
    if now < CLOCK_FLOOR:
        return Check("clock", Status.FAIL,
                     f"the clock says {now:%Y-%m-%d}, before this release ({CLOCK_FLOOR:%Y})",
                     "set the time and enable NTP (timedatectl set-ntp true): MUD signatures "
                     "and TLS certificates are judged against it")
    if synced is None:
        return Check("clock", Status.WARN, f"{now:%Y-%m-%d %H:%M} UTC; NTP state unknown",
                     "enable NTP (systemd-timesyncd or chrony) so signature checks stay right")
    if not synced:
        return Check("clock", Status.WARN, f"{now:%Y-%m-%d %H:%M} UTC; not NTP-synchronised",
                     "timedatectl set-ntp true (or start chrony)")
    return Check("clock", Status.OK, f"{now:%Y-%m-%d %H:%M} UTC, NTP-synchronised")


def judge_br_netfilter(call_iptables: str | None, *, isolate_lan: bool) -> Check:
    """What br_netfilter means for device-to-device (lateral) rules."""
    if isolate_lan:
        state = "not loaded" if call_iptables is None else \
            f"bridge-nf-call-iptables={call_iptables.strip()}"
        return Check("br_netfilter", Status.OK,
                     f"{state}; LAN ports are isolated, so device-to-device traffic is routed "
                     "through the gateway's inet rules either way")
    if call_iptables is not None and call_iptables.strip() == "1":
        return Check("br_netfilter", Status.WARN,
                     "isolate_lan is off; br_netfilter passes bridged frames through the "
                     "inet hooks, so lateral rules apply, but IPv6 neighbour traffic and "
                     "non-IP frames still cross the bridge unfiltered",
                     "set gateway.isolate_lan = true")
    return Check("br_netfilter", Status.FAIL,
                 "isolate_lan is off and br_netfilter is not filtering: devices on the LAN "
                 "bridge reach each other without crossing any rule",
                 "set gateway.isolate_lan = true (or modprobe br_netfilter and sysctl "
                 "net.bridge.bridge-nf-call-iptables=1)")


def judge_conntrack_accounting(value: str | None) -> Check:
    """``nf_conntrack_acct``: identification caps a server's logged replies by conntrack's
    packet count, which needs it (the daemon sets it at start in its namespace)."""
    if value == "1":
        return Check("conntrack_acct", Status.OK, "nf_conntrack_acct=1")
    state = "not readable" if value is None else f"nf_conntrack_acct={value}"
    return Check("conntrack_acct", Status.WARN,
                 f"{state}; the daemon sets it to 1 at start (without it, web "
                 "identification logs a server's replies up to the rate limit)",
                 "sysctl -w net.netfilter.nf_conntrack_acct=1")


@dataclass(frozen=True, slots=True)
class WantedPort:
    """A port the gateway will bind: on which addresses (empty: every address)."""

    proto: str
    port: int
    what: str
    addresses: tuple[str, ...] = ()


def judge_ports(wanted: Sequence[WantedPort], listeners: Sequence[Listener],
                holder: Callable[[int], str | None]) -> list[Check]:
    """Each wanted port free, or held by mudguard itself (its dnsmasq included)."""
    checks = []
    for want in wanted:
        clashes = [lst for lst in listeners if lst.proto == want.proto
                   and lst.port == want.port and _clash(lst.address, want.addresses)]
        holders = sorted({holder(lst.inode) or "an unknown process" for lst in clashes})
        name = f"port {want.proto}/{want.port}"
        if not clashes:
            checks.append(Check(name, Status.OK, f"free ({want.what})"))
        elif all(h.startswith("mudguard (") for h in holders):
            checks.append(Check(name, Status.OK, f"held by mudguard ({want.what})"))
        else:
            checks.append(Check(name, Status.FAIL, f"{want.what}: held by {', '.join(holders)}",
                                f"stop or reconfigure {', '.join(holders)} (e.g. systemctl "
                                "disable --now systemd-resolved / dnsmasq / isc-dhcp-server)"))
    return checks


def _clash(bound: str, wanted: tuple[str, ...]) -> bool:
    if not wanted or bound in ("0.0.0.0", "::"):  # noqa: S104 (a listener's address, read)
        return True
    return bound in wanted


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


# -- probes (thin I/O) ----------------------------------------------------------------------


def _run(argv: Sequence[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True,
                          timeout=PROBE_TIMEOUT, check=False)


def _tool_text(argv: Sequence[str]) -> str | None:
    """stdout+stderr of ``argv`` (None when the tool is not on PATH)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = _run(argv)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout + done.stderr


def _binary_mentions(tool: str, marker: bytes) -> bool:
    """True when the ``tool`` binary holds ``marker`` (a feature's own string)."""
    path = shutil.which(tool)
    if path is None:
        return False
    try:
        return marker in Path(path).read_bytes()
    except OSError:
        return False


NFT_FEATURES: tuple[tuple[str, str, str, bool], ...] = (
    # name, ruleset (table "t" in a fresh namespace), fix, required
    ("nf_tables inet family", """table inet t {
        chain c { type filter hook forward priority 0; policy accept; }
    }""", "a kernel with CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET", True),
    ("concatenated sets with timeouts", """table inet t {
        set s { type ether_addr . ipv4_addr; flags timeout; }
        set s6 { type ipv6_addr . ipv6_addr; flags timeout; }
    }""", "a kernel with CONFIG_NFT_SET_HASH (5.x or later for concatenations)", True),
    ("verdict maps", """table inet t {
        map m { type ether_addr : verdict; }
        chain d { }
        chain c { type filter hook forward priority 0; ether saddr vmap @m; }
    }""", "a kernel with CONFIG_NF_TABLES and CONFIG_NFT_SET_HASH", True),
    ("conntrack state", """table inet t {
        chain c { type filter hook forward priority 0; ct state established,related accept; }
    }""", "a kernel with CONFIG_NFT_CT and CONFIG_NF_CONNTRACK (modprobe nft_ct)", True),
    ("log to NFLOG", """table inet t {
        chain c { type filter hook forward priority 0; log group 100; }
    }""", "a kernel with CONFIG_NFT_LOG and CONFIG_NETFILTER_NETLINK_LOG "
     "(modprobe nfnetlink_log)", True),
    ("TLS ClientHello logging (RFC 9761)", """table inet t {
        set r { type ether_addr; flags timeout; timeout 1m; size 4096; }
        chain c { type filter hook forward priority 0;
            ct mark & 0x10 == 0x10 ct direction original @ih,0,8 >= 0
            ct mark set ct mark & 0xffffffef;
            update @r { ether saddr limit rate 10/second burst 20 packets }
            log group 101 snaplen 2048 prefix "mgt"; }
    }""", "a kernel whose nftables matches the transport payload (@ih, Linux 6.x), sets "
     "conntrack marks (CONFIG_NF_CONNTRACK_MARK) and meters in dynamic sets: the "
     "gateway's base ruleset uses all three", True),
    ("policy as data: concatenated interval sets", """table inet t {
        set s { type mark . ipv4_addr . inet_proto . inet_service . inet_service;
                flags interval; }
        set d { type ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service;
                flags interval, timeout; }
        map p { type ether_addr : mark; }
        chain c { type filter hook forward priority 0;
            meta mark set ether saddr map @p
            meta mark . ip daddr . meta l4proto . th sport . th dport @s accept; }
    }""", "a kernel with CONFIG_NFT_SET_PIPAPO (5.6 or later) for [gateway] "
     "ruleset = \"data\" (the default); or set ruleset = \"chains\"", True),
    ("flowtable offload", """table inet t {
        flowtable f { hook ingress priority 0; devices = { lo }; }
    }""", "optional: a kernel with CONFIG_NF_FLOW_TABLE_INET (modprobe nf_flow_table_inet) "
     "speeds up established flows", False),
)


@contextlib.contextmanager
def _namespace() -> Iterator[str | None]:
    """A throwaway network namespace (None if one cannot be made), deleted afterwards."""
    name = f"mgdoctor{os.getpid()}"
    try:
        made = _run(["ip", "netns", "add", name]).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        made = False
    try:
        yield name if made else None
    finally:
        if made:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                _run(["ip", "netns", "delete", name])


def probe_kernel() -> list[Check]:
    """Each nftables feature and bridge port isolation, tried in a throwaway namespace."""
    if shutil.which("ip") is None or shutil.which("nft") is None:
        return [Check("kernel probe", Status.FAIL, "cannot probe: ip or nft missing",
                      "apt install iproute2 nftables")]
    with _namespace() as ns:
        if ns is None:
            return [Check("kernel probe", Status.FAIL,
                          "cannot create a network namespace to probe the kernel",
                          "run as root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")]
        checks = []
        for name, ruleset, fix, required in NFT_FEATURES:
            done = _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=ruleset)
            _run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "t"])
            if done.returncode == 0:
                checks.append(Check(name, Status.OK, "the kernel accepts it"))
            else:
                error = (done.stderr.strip().splitlines() or ["refused"])[0][:160]
                checks.append(Check(name, Status.FAIL if required else Status.WARN,
                                    f"refused: {error}", fix))
        checks.append(_probe_isolation(ns))
        return checks


def _probe_isolation(ns: str) -> Check:
    steps = [["ip", "link", "add", "mgdbr", "type", "bridge"],
             ["ip", "link", "add", "mgdv0", "type", "veth", "peer", "name", "mgdv1"],
             ["ip", "link", "set", "mgdv0", "master", "mgdbr"],
             ["ip", "link", "set", "mgdv0", "type", "bridge_slave", "isolated", "on"]]
    fix = "a kernel 4.18+ with CONFIG_BRIDGE and iproute2 4.19+ (bridge port isolation)"
    for argv in steps:
        done = _run(["ip", "netns", "exec", ns, *argv])
        if done.returncode != 0:
            return Check("bridge port isolation", Status.FAIL,
                         f"{' '.join(argv[:4])}: {done.stderr.strip()[:120]}", fix)
    shown = _run(["ip", "netns", "exec", ns, "ip", "-d", "-j", "link", "show", "mgdv0"])
    try:
        info = json.loads(shown.stdout)[0]["linkinfo"]["info_slave_data"]
        isolated = bool(info.get("isolated"))
    except (ValueError, LookupError, TypeError):
        isolated = False
    if not isolated:
        return Check("bridge port isolation", Status.FAIL,
                     "the port does not read back as isolated", fix)
    return Check("bridge port isolation", Status.OK, "a bridge port can be isolated")


def is_mudguard(argv: Sequence[str]) -> bool:
    """True for mudguard's own processes: ``mudguard …``, ``python -m mudguard …``, and
    the dnsmasq it runs (whose script is ``mudguard-dhcp-hook``)."""
    names = [os.path.basename(a) for a in argv[:2]]
    if "mudguard" in names:
        return True
    if any(a == "-m" and b.split(".")[0] == "mudguard" for a, b in itertools.pairwise(argv)):
        return True
    return any(a.startswith("--dhcp-script=") and "mudguard" in os.path.basename(a)
               for a in argv)


def holder_label(pid: str, argv: Sequence[str]) -> str:
    """How a socket's owner is named: ``"dnsmasq (pid 42)"``, ``"mudguard (pid 7)"``."""
    if is_mudguard(argv):
        return f"mudguard (pid {pid})"
    name = os.path.basename(argv[0]) if argv else "?"
    if name.startswith("python") and len(argv) > 1:  # a script: name it, not the interpreter
        script = next((a for a in argv[1:] if not a.startswith("-")), "")
        name = f"{name} {os.path.basename(script)[:40]}".strip()
    return f"{name} (pid {pid})"


def socket_holders() -> Callable[[int], str | None]:
    """A lookup from socket inode to its owner's ``holder_label``, from ``/proc/*/fd``."""
    owners: dict[int, str] = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
            argv = (pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        label = holder_label(pid_dir.name, [a for a in argv if a])
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[int(target[8:-1])] = label
    return owners.get


def current_listeners() -> list[Listener]:
    """Every listening TCP and bound UDP socket of this network namespace."""
    found: list[Listener] = []
    for proto in ("tcp", "udp"):
        for suffix, ipv6 in (("", False), ("6", True)):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/net/{proto}{suffix}").read_text()
                found += proc_net_listeners(text, proto, ipv6=ipv6)
    return found


def wanted_ports(config: GatewayConfig | None) -> list[WantedPort]:
    """The ports the daemon binds for ``config`` (the defaults without one)."""
    if config is None:
        return [WantedPort("udp", 53, "DNS guard"), WantedPort("tcp", 53, "DNS guard"),
                WantedPort("udp", 67, "DHCP (dnsmasq)"), WantedPort("udp", 547, "DHCPv6"),
                WantedPort("tcp", 8080, "portal")]
    ports = []
    if config.dns_upstream:
        ports += [WantedPort(p, config.dns_port, "DNS guard", config.addresses)
                  for p in ("udp", "tcp")]
    if config.dhcp_range:
        ports += [WantedPort("udp", 67, "DHCP (dnsmasq)"), WantedPort("udp", 547, "DHCPv6")]
    if config.portal_address:
        ports.append(WantedPort("tcp", config.portal_port, "portal", (config.portal_address,)))
    if config.metrics_listen is not None:
        ports.append(WantedPort("tcp", config.metrics_listen[1], "metrics",
                                (config.metrics_listen[0],)))
    return ports


def _ntp_synced() -> bool | None:
    text = _tool_text(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if text is not None and text.strip() in ("yes", "no"):
        return text.strip() == "yes"
    if Path("/run/systemd/timesync/synchronized").exists():
        return True
    return None


def _radio_problem(config: GatewayConfig | None) -> str | None:
    if config is None or config.wifi_ssid is None or not config.run_hostapd:
        return None
    iface = Path("/sys/class/net") / config.wifi_interface
    if not iface.exists():
        return f"no interface {config.wifi_interface}"
    if not (iface / "phy80211").exists():
        return f"{config.wifi_interface} is not a WiFi radio"
    return None


def _interfaces(config: GatewayConfig) -> list[Check]:
    checks = []
    for key, name in (("gateway.lan_interface", config.lan_interface),
                      ("gateway.wan_interface", config.wan_interface)):
        if name is None:
            continue
        if (Path("/sys/class/net") / name).exists():
            checks.append(Check(key, Status.OK, f"{name} exists"))
        else:
            checks.append(Check(key, Status.FAIL, f"no interface {name}",
                                "create it (e.g. a bridge: ip link add br-lan type bridge) "
                                f"or fix {key}"))
    return checks


def run_checks(config: GatewayConfig | None = None, *,
               now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> list[Check]:
    """Every check, in the order a person fixes them."""
    checks = [judge_capabilities(os.geteuid(),
                                 capability_mask(Path("/proc/self/status").read_text()))]
    checks.append(judge_nft(_tool_text(["nft", "--version"])))
    checks += probe_kernel()
    bridge = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    checks.append(judge_br_netfilter(bridge.read_text() if bridge.exists() else None,
                                     isolate_lan=config.isolate_lan if config else True))
    checks.append(judge_conntrack_accounting(read_accounting()))
    checks.append(judge_dnsmasq(_tool_text(["dnsmasq", "--version"]),
                                mud_url=_binary_mentions("dnsmasq", b"DNSMASQ_MUD_URL"),
                                needed=config is None or config.dhcp_range is not None))
    wifi = config is not None and config.wifi_ssid is not None and config.run_hostapd
    checks.append(judge_hostapd(_tool_text(["hostapd", "-v"]),
                                nl80211=_binary_mentions("hostapd", b"nl80211"),
                                needed=wifi, radio=_radio_problem(config)))
    checks.append(judge_clock(now(), _ntp_synced()))
    checks += judge_ports(wanted_ports(config), current_listeners(), socket_holders())
    if config is not None:
        checks += _interfaces(config)
    return checks
