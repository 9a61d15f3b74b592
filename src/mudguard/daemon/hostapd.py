"""Adapter: the access point, real hostapd, run in the foreground as a child.

hostapd reads each device's own key from the ``wpa_psk_file`` that the key manager
(``mudguard.keys``) writes atomically, and reloads it when told over its control socket
(``RELOAD_WPA_PSK``). With ``driver=none`` (this machine has no radio, PLATFORM.md) it is
the same daemon with the same control socket and key handling, minus the air.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from mudguard.child import stop_child
from mudguard.errors import MudguardError

log = logging.getLogger(__name__)

_SSID = re.compile(r"^[\x20-\x7e]{1,32}$")


class HostapdStartError(MudguardError):
    """hostapd is missing or would not start."""

    key = "hostapd_failed"


def hostapd_config(*, interface: str, ssid: str, psk_file: Path, ctrl_dir: Path,
                   driver: str = "none") -> str:
    """hostapd.conf for WPA2-PSK with per-device keys from ``psk_file``.

    ``ap_isolate=1``: stations never reach each other inside the access point; their
    traffic goes to the gateway, where each device's rules apply.
    """
    if not _SSID.match(ssid) or "\n" in ssid:
        raise HostapdStartError("the SSID must be 1-32 printable ASCII characters")
    return "".join(f"{line}\n" for line in (
        f"interface={interface}", f"driver={driver}", f"ctrl_interface={ctrl_dir}",
        f"ssid={ssid}", "ap_isolate=1", "wpa=2", "wpa_key_mgmt=WPA-PSK", "rsn_pairwise=CCMP",
        f"wpa_psk_file={psk_file}"))


class Hostapd:
    """A running hostapd child; ``ctrl_path`` is its control socket."""

    def __init__(self, *, interface: str, ssid: str, psk_file: Path, state_dir: Path) -> None:
        self.binary = shutil.which("hostapd")
        self.conf = state_dir / "hostapd.conf"
        self.ctrl_dir = state_dir / "hostapd"
        self.ctrl_path = self.ctrl_dir / interface
        self.psk_file = psk_file
        self.text = hostapd_config(interface=interface, ssid=ssid, psk_file=psk_file,
                                   ctrl_dir=self.ctrl_dir)
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start hostapd and wait for its control socket."""
        if self.binary is None:
            raise HostapdStartError("hostapd is not installed (apt-get install hostapd)")
        self.conf.write_text(self.text)
        if not self.psk_file.exists():
            self.psk_file.touch(mode=0o600)
        self.proc = subprocess.Popen([self.binary, str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        deadline = time.monotonic() + timeout
        while not self.ctrl_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.stdout.read() if self.proc.poll() is not None and \
                    self.proc.stdout else ""
                self.stop()
                raise HostapdStartError(f"hostapd did not start: {out.strip()[-400:]}")
            time.sleep(0.02)
        threading.Thread(target=self._log, daemon=True, name="hostapd-log").start()
        log.info("hostapd running (pid %d), control socket %s", self.proc.pid, self.ctrl_path)

    def _log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            log.debug("hostapd: %s", line.rstrip())

    def stop(self) -> None:
        """Stop hostapd (SIGTERM, then SIGKILL after 5 s)."""
        stop_child(self.proc)
