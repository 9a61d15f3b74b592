"""``mudguard demo`` as a user runs it: headless, it must see every expected outcome
(bulb allowed and its signature verified, camera quarantined within N seconds, plug LAN
only, unknown device limited while learning then granted, printer reachable from the LAN, portal
reachable from the host); interactive, Ctrl-C must leave the host as it was; without
root or nftables it must say what is missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

_ROOT_MARKS = (
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
)


def needs_root(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test as needing root, namespaces, dnsmasq and nftables."""
    for mark in _ROOT_MARKS:
        test = mark(test)
    return test
DEMO = [sys.executable, "-m", "mudguard", "demo"]
# Per process, so two runs at once do not share namespaces.
HEADLESS_PREFIX = f"mgt{os.getpid() % 10000}"
CTRL_C_PREFIX = f"mgc{os.getpid() % 10000}"
OUTCOMES = ("bulb: its signed MUD file verified", "bulb: profiled", "camera: quarantined",
            "plug (out of support): LAN only",
            "gadget (no MUD): limited while learning, then granted",
            "printer: reachable from the LAN", "wifi: each device has its own key",
            "portal: reachable from the host")


def _leftovers(prefix: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in (names + links).splitlines()
            if line.startswith(prefix)]


@needs_root
@pytest.mark.timeout(150)
def test_headless_demo_sees_every_expected_outcome() -> None:
    started = time.monotonic()
    proc = subprocess.run([*DEMO, "--headless", "--duration", "90", "--quarantine-within", "10",
                           "--prefix", HEADLESS_PREFIX, "--port", "0"],
                          capture_output=True, text=True, timeout=140)
    elapsed = time.monotonic() - started
    final = [line for line in proc.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "WAIT")]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(final) == len(OUTCOMES), proc.stdout
    for line, outcome in zip(final, OUTCOMES, strict=True):
        assert line.startswith("PASS") and outcome in line, line
    assert "quarantined" in proc.stdout and " ms after the attack began" in proc.stdout
    # It stopped once every outcome had passed (the help says so), not at --duration 90:
    # running to the limit would take 90 s plus building and tearing down the home.
    assert elapsed < 90
    assert _leftovers(HEADLESS_PREFIX) == []


@needs_root
@pytest.mark.timeout(120)
def test_ctrl_c_tears_the_home_down_and_leaves_the_host_as_it_was() -> None:
    ruleset_before = subprocess.run(["nft", "list", "ruleset"], capture_output=True,
                                    text=True).stdout
    routes_before = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    proc = subprocess.Popen([*DEMO, "--prefix", CTRL_C_PREFIX, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]  # building…, starting…, portal:
        assert lines[2].startswith("portal: http://127.0.0.1:"), lines
        url = lines[2].split()[1]
        deadline = time.monotonic() + 30
        while True:  # the daemon may still be starting its portal
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the portal never answered"
                time.sleep(0.5)
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200 and b"mudguard" in response.read().lower()
        assert _leftovers(CTRL_C_PREFIX)  # the home exists while it runs
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert _leftovers(CTRL_C_PREFIX) == []
    assert subprocess.run(["nft", "list", "ruleset"], capture_output=True,
                          text=True).stdout == ruleset_before
    assert subprocess.run(["ip", "route"], capture_output=True, text=True).stdout == routes_before


def _closed_to_others(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users may not enter, if any."""
    for folder in reversed(path.resolve().parents):
        if not folder.stat().st_mode & 0o001:
            return folder
    return None


def test_without_root_the_demo_says_what_is_missing(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to drop to an unprivileged user (setpriv)")
    closed = _closed_to_others(Path(sys.executable).parent)
    if closed is not None:  # e.g. a clone inside a `mktemp -d` folder (mode 0700)
        pytest.skip(f"{closed} is closed to other users, so an unprivileged user cannot "
                    "run this checkout's Python; clone into a folder others may enter")
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *DEMO, "--headless"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert "not running as root" in proc.stderr and "sudo" in proc.stderr


def test_without_nftables_the_demo_says_what_is_missing(tmp_path: Path) -> None:
    for tool in ("ip", "dnsmasq", "hostapd"):
        found = shutil.which(tool)
        if found:
            (tmp_path / tool).symlink_to(found)
    proc = subprocess.run([*DEMO, "--headless"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "nft is missing (apt-get install nftables)" in proc.stderr
    assert "dnsmasq is missing" not in proc.stderr  # only what is missing is named


@needs_root
def test_a_second_demo_with_the_same_prefix_refuses_to_start() -> None:
    import fcntl
    import tempfile

    with (Path(tempfile.gettempdir()) / "mudguard-demo-mgik.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running demo holds it
        proc = subprocess.run([*DEMO, "--headless", "--prefix", "mgik"], capture_output=True,
                              text=True, timeout=60)
    assert proc.returncode == 2
    assert "another mudguard demo (prefix mgik) is running" in proc.stderr
    assert _leftovers("mgik") == []


def test_a_weak_owner_password_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("short\n")
    proc = subprocess.run([*DEMO, "--headless", "--prefix", "mgweak", "--owner-password-file",
                           str(secret)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    said = " ".join(proc.stderr.split())  # the console wraps long lines
    assert "--owner-password-file: the password must be 10 to 256 characters long" in said
    assert _leftovers("mgweak") == []
