"""Child processes mudguard starts (dnsmasq, hostapd, the virtual home's servers)."""

from __future__ import annotations

import subprocess


def stop_child(proc: subprocess.Popen[str] | subprocess.Popen[bytes] | None, *,
               grace_s: float = 5.0) -> None:
    """Stop ``proc`` if it still runs: SIGTERM, then SIGKILL after ``grace_s`` seconds.

    Safe to call twice, or with a process that already exited (or ``None``).
    """
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)
