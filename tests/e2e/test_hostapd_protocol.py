"""The control-interface protocol over a real AF_UNIX socket, against a small server
that speaks it the way hostapd 2.10 does (replies recorded from the real daemon).

Stations and AP-STA-CONNECTED events need a radio, which this machine lacks, so the
server holds stations and emits events on request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mudguard.keys.core import ONBOARDING_MAC, BindingOutcome, parse_psk_file
from mudguard.keys.hostapd import (
    HostapdControl,
    HostapdError,
    HostapdEvents,
    HostapdNotRunning,
)
from mudguard.keys.ring import KeyRing
from mudguard.keys.service import KeyEventWatcher, KeyFiles, KeyManager


class FakeHostapd:
    """hostapd's control socket: one command per datagram, reply to the sender."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.stations: dict[str, str] = {}
        self.commands: list[str] = []
        self.monitors: set[str] = set()
        self.reload_reply = "OK\n"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _reply(self, command: str, sender: str) -> str:
        name, _, arg = command.partition(" ")
        if name == "PING":
            return "PONG\n"
        if name == "ATTACH":
            self.monitors.add(sender)
            return "OK\n"
        if name == "DETACH":
            self.monitors.discard(sender)
            return "OK\n"
        if name == "RELOAD_WPA_PSK":
            return self.reload_reply
        if name == "DEAUTHENTICATE":
            self.stations.pop(arg, None)
            return "OK\n"
        macs = sorted(self.stations)
        if name == "STA":
            return self.stations.get(arg, "FAIL\n")
        if name == "STA-FIRST":
            return self.stations[macs[0]] if macs else ""
        if name == "STA-NEXT":
            later = [m for m in macs if m > arg]
            return self.stations[later[0]] if later else ""
        return "UNKNOWN COMMAND\n"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            command = data.decode()
            self.commands.append(command)
            try:
                self.sock.sendto(self._reply(command, sender).encode(), sender)
            except OSError:
                self.monitors.discard(sender)  # the client is gone (hostapd does the same)

    def connect(self, mac: str, keyid: str) -> None:
        self.stations[mac] = (f"{mac}\nflags=[AUTH][ASSOC][AUTHORIZED]\naid=1\n"
                              f"keyid={keyid}\nrx_packets=3\n")

    def emit(self, text: str) -> None:
        for monitor in list(self.monitors):
            self.sock.sendto(text.encode(errors="surrogateescape"), monitor)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        self.path.unlink(missing_ok=True)  # as hostapd does on exit


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHostapd]:
    server = FakeHostapd(tmp_path / "mgkwlan0")
    yield server
    server.close()


@pytest.fixture
def manager(tmp_path: Path, fake: FakeHostapd) -> KeyManager:
    files = KeyFiles(psk_file=tmp_path / "psk", ctrl_path=fake.path)
    return KeyManager(KeyRing(tmp_path / "keys.db"), files)


def test_all_sta_pages_through_every_station(fake: FakeHostapd) -> None:
    for i in (3, 1, 2):
        fake.connect(f"02:00:00:00:00:0{i}", f"dev-{i}")
    with HostapdControl(fake.path) as ctrl:
        stations = ctrl.all_sta()
        assert [s.mac for s in stations] == ["02:00:00:00:00:01", "02:00:00:00:00:02",
                                            "02:00:00:00:00:03"]
        assert [s.keyid for s in stations] == ["dev-1", "dev-2", "dev-3"]
        info = ctrl.sta("02:00:00:00:00:02")
        assert info is not None and info.params["flags"] == "[AUTH][ASSOC][AUTHORIZED]"


def test_onboarding_key_binds_to_the_first_mac_from_the_event(
        fake: FakeHostapd, manager: KeyManager) -> None:
    onboarding = manager.issue(mac=None, vlan=30, device="new plug", now=1.0)
    with HostapdEvents(fake.path) as events:
        fake.emit("<2>CTRL-EVENT-SOMETHING-ELSE")
        fake.emit(f"<3>AP-STA-CONNECTED 02:00:00:00:00:0b keyid={onboarding.keyid}")
        first = events.next_event(2.0)
        assert first is not None and manager.on_event(first, now=5.0) is None
        event = events.next_event(2.0)
    assert event is not None
    decision = manager.on_event(event, now=5.0)
    assert decision is not None and decision.outcome is BindingOutcome.BIND
    on_disk = parse_psk_file(manager.files.psk_file.read_text())
    assert [(e.keyid, e.mac, e.vlan) for e in on_disk] == [
        (onboarding.keyid, "02:00:00:00:00:0b", 30)]
    record = manager.ring.get(onboarding.keyid)
    assert record is not None and record.bound_at == 5.0 and record.device == "new plug"
    assert fake.commands.count("RELOAD_WPA_PSK") == 2  # issue, then bind
    assert [e["event"] for _, e in manager.ring.events()] == ["wifi_key_bound"]


def test_another_mac_with_a_bound_key_is_disconnected_and_reported(
        fake: FakeHostapd, manager: KeyManager) -> None:
    key = manager.issue(mac="02:00:00:00:00:0a", device="camera", now=1.0)
    fake.connect("02:00:00:00:00:0a", key.keyid)
    fake.connect("02:00:00:00:00:66", key.keyid)
    with HostapdEvents(fake.path) as events:
        fake.emit(f"<3>AP-STA-CONNECTED 02:00:00:00:00:66 keyid={key.keyid}")
        event = events.next_event(2.0)
    assert event is not None
    decision = manager.on_event(event, now=7.0)
    assert decision is not None and decision.outcome is BindingOutcome.MISMATCH
    assert "DEAUTHENTICATE 02:00:00:00:00:66" in fake.commands
    assert "DEAUTHENTICATE 02:00:00:00:00:0a" not in fake.commands
    assert sorted(fake.stations) == ["02:00:00:00:00:0a"]
    (at, details), = manager.ring.events()
    assert at == 7.0 and details["event"] == "wifi_key_mac_mismatch"
    assert key.entry.passphrase not in str(details)
    record = manager.ring.get(key.keyid)
    assert record is not None and record.entry.mac == "02:00:00:00:00:0a"  # unchanged


def test_unknown_key_is_disconnected(fake: FakeHostapd, manager: KeyManager) -> None:
    with HostapdEvents(fake.path) as events:
        fake.emit("<3>AP-STA-CONNECTED 02:00:00:00:00:77 keyid=dev-gone")
        event = events.next_event(2.0)
    assert event is not None
    decision = manager.on_event(event, now=1.0)
    assert decision is not None and decision.outcome is BindingOutcome.UNKNOWN
    assert fake.commands[-1] == "DEAUTHENTICATE 02:00:00:00:00:77"


def test_revoke_disconnects_only_that_device(fake: FakeHostapd, manager: KeyManager) -> None:
    keys = [manager.issue(mac=f"02:00:00:00:00:0{i}", now=float(i)) for i in range(1, 4)]
    for key in keys:
        fake.connect(key.entry.mac, key.keyid)
    fake.commands.clear()
    manager.revoke(keys[1].keyid)
    assert fake.commands == ["RELOAD_WPA_PSK", "DEAUTHENTICATE 02:00:00:00:00:02"]
    with HostapdControl(fake.path) as ctrl:
        assert [s.mac for s in ctrl.all_sta()] == ["02:00:00:00:00:01", "02:00:00:00:00:03"]
    on_disk = parse_psk_file(manager.files.psk_file.read_text())
    assert on_disk == sorted([keys[0].entry, keys[2].entry], key=lambda e: e.keyid)


def test_revoking_an_unused_onboarding_key_disconnects_nobody(
        fake: FakeHostapd, manager: KeyManager) -> None:
    key = manager.issue(mac=None, now=1.0)
    assert key.entry.mac == ONBOARDING_MAC
    fake.commands.clear()
    manager.revoke(key.keyid)
    assert fake.commands == ["RELOAD_WPA_PSK"]


def test_refused_reload_rolls_back_ring_and_file(fake: FakeHostapd, manager: KeyManager) -> None:
    kept = manager.issue(mac="02:00:00:00:00:01", now=1.0)
    before = manager.files.psk_file.read_text()
    fake.reload_reply = "FAIL\n"
    fake.commands.clear()
    with pytest.raises(HostapdError, match="FAIL"):
        manager.issue(mac="02:00:00:00:00:02", now=2.0)
    # hostapd empties its key list before reading: the old file is reloaded at once.
    assert fake.commands == ["RELOAD_WPA_PSK", "RELOAD_WPA_PSK"]
    with pytest.raises(HostapdError):
        manager.revoke(kept.keyid)
    assert [r.keyid for r in manager.ring.records()] == [kept.keyid]
    assert manager.files.psk_file.read_text() == before


def test_malformed_event_datagrams_are_skipped(fake: FakeHostapd) -> None:
    with HostapdEvents(fake.path) as events:
        for junk in ("<x>garbage", "<3>", "\xff\xfe", "<3>AP-STA-CONNECTED 02:00:00:00:00:01"):
            fake.emit(junk)
        event = events.next_event(2.0)
        assert event is not None and event.mac == "02:00:00:00:00:01"
        assert events.next_event(0.2) is None
    assert fake.monitors == set()  # DETACH on close


def test_silent_server_times_out_clearly(tmp_path: Path) -> None:
    path = tmp_path / "mute"
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mute.bind(str(path))
    try:
        with HostapdControl(path, timeout=0.3) as ctrl, \
                pytest.raises(HostapdError, match="did not answer PING"):
            ctrl.ping()
    finally:
        mute.close()


def test_missing_socket_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HostapdNotRunning, match="cannot reach hostapd"):
        HostapdControl(tmp_path / "nope")
    stale = tmp_path / "stale"  # a socket file left by a killed hostapd
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()
    with pytest.raises(HostapdNotRunning):
        HostapdControl(stale)


def test_binding_events_are_also_handed_to_notify(fake: FakeHostapd, tmp_path: Path) -> None:
    seen: list[tuple[dict[str, str], float]] = []
    manager = KeyManager(KeyRing(tmp_path / "n.db"),
                         KeyFiles(psk_file=tmp_path / "n.psk", ctrl_path=fake.path),
                         notify=lambda event, now: seen.append((event, now)))
    key = manager.issue(mac="02:00:00:00:00:0a", now=1.0)
    with HostapdEvents(fake.path) as events:
        fake.emit(f"<3>AP-STA-CONNECTED 02:00:00:00:00:0a keyid={key.keyid}")
        fake.emit(f"<3>AP-STA-CONNECTED 02:00:00:00:00:0f keyid={key.keyid}")
        decisions = [manager.on_event(e, now=2.0) for e in
                     (events.next_event(2.0), events.next_event(2.0)) if e is not None]
    assert [d.outcome for d in decisions if d] == [BindingOutcome.ACCEPT, BindingOutcome.MISMATCH]
    assert [(e["event"], e["mac"], now) for e, now in seen] == [
        ("wifi_key_mac_mismatch", "02:00:00:00:00:0f", 2.0)]


def test_watch_command_binds_an_onboarding_key(fake: FakeHostapd, tmp_path: Path) -> None:
    """``mudguard keys watch`` as a process: ATTACH, then bind on AP-STA-CONNECTED."""
    import os
    import subprocess
    import sys
    import time

    files = KeyFiles(psk_file=tmp_path / "w.psk", ctrl_path=fake.path)
    key = KeyManager(KeyRing(tmp_path / "w.db"), files).issue(mac=None, now=1.0)
    env = {**os.environ, "MUDGUARD_KEYS_DB": str(tmp_path / "w.db"), "PYTHONUNBUFFERED": "1",
           "MUDGUARD_PSK_FILE": str(files.psk_file), "MUDGUARD_HOSTAPD_CTRL": str(fake.path)}
    proc = subprocess.Popen([sys.executable, "-m", "mudguard", "keys", "watch", "--seconds", "20"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while not fake.monitors and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert fake.monitors, "watch never attached"
        fake.emit(f"<3>AP-STA-CONNECTED 02:00:00:00:00:0e keyid={key.keyid}")
        while not any(": bind " in ln for ln in lines) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
    out = "".join(lines)
    assert f"02:00:00:00:00:0e: bind {key.keyid}" in out
    assert key.entry.passphrase not in out
    entries = parse_psk_file(files.psk_file.read_text())
    assert [(e.keyid, e.mac) for e in entries] == [(key.keyid, "02:00:00:00:00:0e")]


def _wait(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_event_watcher_binds_survives_failures_and_reattaches(tmp_path: Path) -> None:
    path = tmp_path / "mgkwlan1"
    fake = FakeHostapd(path)
    manager = KeyManager(KeyRing(tmp_path / "e.db"),
                         KeyFiles(psk_file=tmp_path / "e.psk", ctrl_path=path))
    first = manager.issue(mac=None, now=1.0)
    second = manager.issue(mac=None, now=1.0)
    seen: list[tuple[str, BindingOutcome]] = []
    watcher = KeyEventWatcher(manager, path, clock=lambda: 42.0, poll=0.05, retry=0.05,
                              on_decision=lambda e, d: seen.append((e.mac or "", d.outcome)))
    watcher.start()
    try:
        assert watcher.attached.wait(5)
        # hostapd refuses the reload: this bind fails, is rolled back, the watcher goes on
        fake.reload_reply = "FAIL\n"
        fake.emit(f"<3>AP-STA-CONNECTED 02:00:00:00:00:21 keyid={first.keyid}")
        assert _wait(lambda: "DEAUTHENTICATE 02:00:00:00:00:21" in fake.commands)
        fake.reload_reply = "OK\n"
        fake.emit(f"<3>AP-STA-CONNECTED 02:00:00:00:00:22 keyid={second.keyid}")
        assert _wait(lambda: bool(seen))
        assert seen == [("02:00:00:00:00:22", BindingOutcome.BIND)]
        # hostapd restarts: the watcher notices (PING on an idle socket) and re-attaches
        fake.close()
        assert _wait(lambda: not watcher.attached.is_set())
        fake = FakeHostapd(path)
        assert _wait(lambda: bool(fake.monitors))
        fake.emit(f"<3>AP-STA-CONNECTED 02:00:00:00:00:21 keyid={first.keyid}")
        assert _wait(lambda: len(seen) == 2)
        assert seen[1] == ("02:00:00:00:00:21", BindingOutcome.BIND)
    finally:
        watcher.stop()
        fake.close()
    records = {r.keyid: r for r in manager.ring.records()}
    assert records[first.keyid].entry.mac == "02:00:00:00:00:21"
    assert records[second.keyid].entry.mac == "02:00:00:00:00:22"
    assert records[second.keyid].bound_at == 42.0
