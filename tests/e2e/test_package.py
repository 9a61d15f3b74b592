"""The Debian package, built from this checkout by ``packaging/build-deb``, installed with
apt in a clean Debian 12 system and started by that system's own systemd.

The clean system is a ``debootstrap`` of bookworm (minbase, plus systemd and dbus as any
Debian install has them), cached as a tarball (``MUDGUARD_PACKAGE_CACHE``, default
``~/.cache/mudguard/package-test``) and unpacked afresh for each run; apt resolves the
package's Depends from the Debian mirror (downloads cached beside it). The container is
``systemd-nspawn --boot`` (docker's daemon is not available on the test machines) in a
network namespace of its own: a LAN bridge with documentation addresses and one device
plugged in by a veth pair; nothing leaves it. mudguard-base and mudguard are enabled as
the setup guide says and the container is booted: the daemon starts from its hardened
unit (``Type=notify``), tells journald ``ready`` (structured fields), serves metrics,
leases an address to the device by the dnsmasq it runs and tells it in the journal
(``MUDGUARD_EVENT=device``), lists it in ``mudguard devices --json``, passes
``mudguard doctor``, re-reads its configuration on ``systemctl reload`` without dropping
its tables, and ``systemd-analyze security`` rates the loaded unit; ``apt-get purge``
stops it, leaves its tables in the kernel (the LAN stays closed) and removes its files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MIRROR = "http://deb.debian.org/debian"
NS = "mgh19pkg"  # the container's network namespace
DEV = "mgh19pkgd"  # a device on its LAN
DEVICE_MAC = "02:00:5e:00:53:aa"
METRICS_PORT = 9469
BASE_PACKAGES = "systemd-sysv,dbus"  # what a minbase lacks to boot like an installed Debian
# A router's root has CAP_NET_ADMIN; systemd-nspawn drops it unless asked (the container's
# network namespace is its own: nothing it does reaches the host's).
NSPAWN_CAPS = ("--capability=CAP_NET_ADMIN",)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (debootstrap, systemd-nspawn)"),
    pytest.mark.skipif(
        any(shutil.which(tool) is None
            for tool in ("dpkg-deb", "debootstrap", "systemd-nspawn", "nsenter")),
        reason="needs dpkg-deb, debootstrap, systemd-nspawn (systemd-container) and nsenter: "
               "scripts/setup.sh installs them"),
    pytest.mark.skipif(not Path("/usr/bin/python3").exists(),
                       reason="needs Debian's /usr/bin/python3 to build the package's venv"),
]

TEST_CONFIG = f"""\
# written by tests/e2e/test_package.py, as an owner edits the example
[gateway]
lan_interface = "br-lan"
lan_prefixes = ["192.0.2.0/24"]
addresses = ["192.0.2.1"]
home_default = "lan"

[dhcp]
range = ["192.0.2.100", "192.0.2.199"]

[dns]
upstream = ["198.51.100.53"]

[portal]
address = "192.0.2.1"
port = 8080

[metrics]
listen = "127.0.0.1:{METRICS_PORT}"
"""


def _cache() -> Path:
    folder = Path(os.environ.get("MUDGUARD_PACKAGE_CACHE",
                                 Path.home() / ".cache" / "mudguard" / "package-test"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _debian12_image(cache: Path) -> Path:
    """The clean bookworm tarball, made once with debootstrap (about a minute)."""
    image = cache / "debian12-systemd.tar"
    if image.is_file():
        return image
    build = cache / "rootfs-build"
    shutil.rmtree(build, ignore_errors=True)
    made = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm",
         str(build), MIRROR], capture_output=True, text=True, timeout=900)
    if made.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        pytest.skip(f"debootstrap of Debian 12 from {MIRROR} failed (mirror unreachable?): "
                    f"{made.stderr.strip()[-300:]}")
    subprocess.run(["chroot", str(build), "apt-get", "clean"], check=True, timeout=60)
    partial = image.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(build), "-cf", str(partial), "."], check=True,
                   timeout=300)
    partial.rename(image)
    shutil.rmtree(build, ignore_errors=True)
    return image


def _run(argv: list[str], timeout: float = 120, check: bool = True,
         ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
    return done


@contextlib.contextmanager
def _lan_namespace() -> Iterator[str]:
    """The container's network namespace (loopback, a LAN bridge) and a device's (``DEV``)
    plugged into that bridge by a veth pair."""
    for ns in (NS, DEV):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        _run(["ip", "netns", "add", ns])
    try:
        for argv in (["link", "set", "lo", "up"],
                     ["link", "add", "br-lan", "type", "bridge"],
                     ["addr", "add", "192.0.2.1/24", "dev", "br-lan"],
                     ["link", "set", "br-lan", "up"],
                     ["link", "add", "lan1", "type", "veth", "peer", "name", "eth0",
                      "netns", DEV],
                     ["link", "set", "lan1", "master", "br-lan", "up"]):
            _run(["ip", "-n", NS, *argv])
        for argv in (["link", "set", "lo", "up"],
                     ["link", "set", "eth0", "address", DEVICE_MAC, "up"]):
            _run(["ip", "-n", DEV, *argv])
        yield f"/run/netns/{NS}"
    finally:
        for ns in (NS, DEV):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Booted:
    """A container booted by ``systemd-nspawn --boot``; commands run inside by nsenter."""

    def __init__(self, root: Path, netns: Path | str, log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--boot",
             "--console=pipe", f"--network-namespace-path={netns}", *NSPAWN_CAPS,
             "-D", str(root)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.leader = self._leader(time.monotonic() + 30)

    def _leader(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "systemd-nspawn exited"
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                    children = (task / "children").read_text().split()
                    if children:
                        return int(children[0])
            time.sleep(0.1)
        raise AssertionError("the container's init never started")

    def run(self, *argv: str, timeout: float = 60, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces)."""
        return _run(["nsenter", "-t", str(self.leader), "-a", *argv], timeout=timeout,
                    check=check)

    def wait_running(self, timeout: float = 90) -> str:
        """Wait until systemd finished booting; its state (running or degraded)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.5)
        raise AssertionError(f"the container did not finish booting: {state}")

    def journal(self, *match: str) -> list[dict[str, str]]:
        """The mudguard unit's journal entries (JSON), filtered by ``FIELD=value``."""
        out = self.run("journalctl", "-u", "mudguard", "-o", "json", "--no-pager",
                       *match, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def wait_journal(self, *match: str, timeout: float = 60) -> dict[str, str]:
        """The first matching entry, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.journal(*match)
            if found:
                return found[0]
            time.sleep(0.5)
        status = self.run("systemctl", "status", "mudguard", "--no-pager", check=False)
        logs = self.run("journalctl", "-u", "mudguard", "--no-pager", "-n", "60", "-o", "cat",
                        check=False)
        raise AssertionError(f"no journal entry {match}:\n{status.stdout}\n{logs.stdout}")

    def stop(self) -> None:
        """Power the container off (SIGKILL after 30 s)."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.run("systemctl", "poweroff", "--no-block", check=False, timeout=10)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.mark.timeout(1500)  # cold caches: debootstrap and every wheel downloaded (≈5 min)
def test_the_package_installs_in_a_clean_debian_12_and_its_service_answers(
        tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    cache = _cache()
    image = _debian12_image(cache)
    timings["image"] = time.monotonic() - started

    mark = time.monotonic()
    built = _run([str(REPO / "packaging" / "build-deb"), "-o", str(tmp_path / "dist")],
                 timeout=900)
    deb = Path(built.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.name.startswith("mudguard_") and deb.suffix == ".deb"
    info = _run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    for needed in ("nftables", "dnsmasq-base", "iproute2", "conntrack", "python3"):
        assert needed in info
    timings["build"] = time.monotonic() - mark

    mark = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    try:
        _run(["tar", "-C", str(root), "-xf", str(image)], timeout=300)
        shutil.copy(deb, root / "root" / deb.name)  # nspawn mounts a fresh /tmp
        archives = cache / "apt-archives"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        in_root = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(root),
                   f"--bind={archives}:/var/cache/apt/archives",
                   "--setenv=DEBIAN_FRONTEND=noninteractive"]
        lists = _run([*in_root, "apt-get", "update", "-qq", "--error-on=any"], timeout=300,
                     check=False)
        if lists.returncode != 0:
            pytest.skip(f"the Debian mirror of the clean system is unreachable: "
                        f"{lists.stderr.strip()[-300:]}")
        install = _run([*in_root, "sh", "-c", "apt-get install -y -q --no-install-recommends "
                        f"/root/{deb.name} && dpkg -s mudguard"], timeout=900)
        assert "Status: install ok installed" in install.stdout
        assert "edit /etc/mudguard/gateway.toml" in install.stdout  # postinst's next steps
        timings["install"] = time.monotonic() - mark

        # The example configuration is a conffile the daemon's own parser accepts as-is.
        example = (root / "etc" / "mudguard" / "gateway.toml").read_text()
        assert "lan_interface" in example
        from mudguard.daemon import parse_config

        parse_config(example.replace("/var/lib/mudguard", str(tmp_path / "state")))
        assert "/etc/mudguard/gateway.toml" in (root / "var/lib/dpkg/info/mudguard.conffiles") \
            .read_text()
        assert os.readlink(root / "usr" / "bin" / "mudguard") \
            == "/usr/lib/mudguard/venv/bin/mudguard"

        # As the owner does (docs/setup-guide.md): edit, write the boot base, enable.
        (root / "etc" / "mudguard" / "gateway.toml").write_text(TEST_CONFIG)
        with _lan_namespace() as netns:
            _run(["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(root),
                  f"--network-namespace-path={netns}", *NSPAWN_CAPS, "sh", "-c",
                  "mudguard base -o /var/lib/mudguard/base.json && "
                  "systemctl enable mudguard-base.service mudguard.service"], timeout=120)
            mark = time.monotonic()
            box = Booted(root, netns, tmp_path / "boot.log")
            try:
                state = box.wait_running()
                ready = box.wait_journal("MUDGUARD_EVENT=ready")
                timings["boot_to_ready"] = time.monotonic() - mark
                assert state == "running", box.run("systemctl", "--failed", "--no-pager").stdout
                active = box.run("systemctl", "is-active", "mudguard-base", "mudguard")
                assert active.stdout.split() == ["active", "active"]
                # Structured journal entries, not text lines.
                assert ready["SYSLOG_IDENTIFIER"] == "mudguard"
                assert json.loads(ready["MUDGUARD_JSON"])["event"] == "ready"
                closed = box.wait_journal("MUDGUARD_EVENT=restored")
                assert closed["MUDGUARD_DEVICES"] == "0"
                # It answers: metrics (the real endpoint), the database, the kernel's tables.
                scrape = box.run("/usr/lib/mudguard/venv/bin/python", "-c",
                                 "import urllib.request;print(urllib.request.urlopen("
                                 f"'http://127.0.0.1:{METRICS_PORT}/metrics',timeout=5)"
                                 ".read().decode())").stdout
                assert "mudguard_devices" in scrape
                devices = box.run("mudguard", "devices", "--json")
                assert json.loads(devices.stdout) == []
                tables = box.run("nft", "list", "tables").stdout
                assert "table inet mudguard" in tables
                running = box.run("sh", "-c", "cat /proc/[0-9]*/comm", check=False).stdout
                assert "dnsmasq" in running.split()  # the DHCP server it runs, under its unit
                # A device takes a lease from the dnsmasq the service runs: the journal tells
                # it (the portal's "new device"), the database holds it; with no MUD file it
                # is learned (the packaged default, #16).
                _run(["ip", "netns", "exec", DEV, sys.executable, "-c",
                      "from mudguard.demo import dhcp; print(dhcp.obtain('eth0', "
                      f"'{DEVICE_MAC}', hostname='plug', mud_url=None, timeout=20).address)"],
                     timeout=60)
                told = box.wait_journal("MUDGUARD_EVENT=device", f"MUDGUARD_MAC={DEVICE_MAC}",
                                        "MUDGUARD_STATE=learning")
                assert told["PRIORITY"] == "6"
                assert json.loads(told["MUDGUARD_IPV4"])[0].startswith("192.0.2.1")
                listed = json.loads(box.run("mudguard", "devices", "--json").stdout)
                assert [d["mac"] for d in listed] == [DEVICE_MAC]
                # A correct machine: the doctor passes (ports held by mudguard itself are fine).
                doctor = box.run("mudguard", "doctor", "--json", check=False, timeout=120)
                report = json.loads(doctor.stdout)
                assert (doctor.returncode, report["ok"]) == (0, True), [
                    c for c in report["checks"] if c["status"] not in ("ok", "warn")]
                # systemctl reload: SIGHUP, re-read, rules kept.
                box.run("systemctl", "reload", "mudguard")
                reloaded = box.wait_journal("MUDGUARD_EVENT=reload")
                assert json.loads(reloaded["MUDGUARD_APPLIED"]) == []
                assert box.run("systemctl", "is-active", "mudguard").stdout.strip() == "active"
                assert box.run("nft", "list", "tables").stdout == tables
                # The loaded unit's hardening, as systemd rates it (lower is better).
                security = box.run("systemd-analyze", "security", "--no-pager", "mudguard.service",
                                   check=False).stdout
                score = float(security.rsplit("Overall exposure level for mudguard.service:", 1)[1]
                              .split()[0])
                assert score <= 3.5, security
                # Removal stops the daemon but never opens the LAN: its tables stay in the
                # kernel until the next boot; purge removes the state and the configuration.
                box.run("apt-get", "purge", "-y", "-q", "mudguard", timeout=180)
                assert box.run("systemctl", "is-active", "mudguard", check=False) \
                    .stdout.strip() == "inactive"
                assert "table inet mudguard" in box.run("nft", "list", "tables").stdout
                for gone in ("usr/lib/mudguard", "var/lib/mudguard", "etc/mudguard",
                             "usr/bin/mudguard"):
                    assert not os.path.lexists(root / gone), gone
            finally:
                box.stop()
    finally:  # half a gigabyte per run: never left in the temporary folder
        shutil.rmtree(root, ignore_errors=True)
    timings["total"] = time.monotonic() - started
    print("\npackage test: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
          + f"; systemd-analyze security {score}; {deb.stat().st_size / 1e6:.1f} MB")
