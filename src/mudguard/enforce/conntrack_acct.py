"""Conntrack accounting (``net.netfilter.nf_conntrack_acct``), which the identification
rules' ``ct reply packets`` cap needs (``policy._data._identify_rules``): without it the
kernel counts no packets, the cap never holds and a server's replies are logged up to
the per-device rate limit instead of its first ``IDENTIFY_SERVER_PACKETS``.

Thin adapter: the daemon calls ``enable_conntrack_accounting`` once at start, in its own
network namespace (the sysctl is per namespace); ``mudguard doctor`` reports it."""

from __future__ import annotations

from pathlib import Path
from typing import Final

ACCT_SYSCTL: Final = "net.netfilter.nf_conntrack_acct"
ACCT_PATH: Final = Path("/proc/sys/net/netfilter/nf_conntrack_acct")


def read_accounting(path: Path = ACCT_PATH) -> str | None:
    """The sysctl's value (``"0"``/``"1"``), None if the file is absent (conntrack not
    loaded) or unreadable."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def enable_conntrack_accounting(path: Path = ACCT_PATH) -> tuple[bool, str]:
    """Turn accounting on if it is off: (changed, what happened). Never raises: with
    accounting off the observation logs more server packets, it never widens access."""
    value = read_accounting(path)
    if value == "1":
        return False, f"{ACCT_SYSCTL}=1 already"
    if value is None:
        return False, f"{ACCT_SYSCTL} not readable (nf_conntrack not loaded?)"
    try:
        path.write_text("1")
    except OSError as exc:
        return False, f"cannot set {ACCT_SYSCTL}=1: {exc.strerror}"
    return read_accounting(path) == "1", f"{ACCT_SYSCTL} was {value}, set to 1"
