"""``enable_conntrack_accounting`` in a fresh network namespace (the sysctl is per
namespace): off -> on, then left alone; doctor's judgement of both values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mudguard.daemon.doctor import Status, judge_conntrack_accounting

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for netns")

CODE = """
from mudguard.enforce.conntrack_acct import enable_conntrack_accounting, read_accounting
print(read_accounting())
print(enable_conntrack_accounting())
print(read_accounting())
print(enable_conntrack_accounting())
"""


def test_the_daemon_turns_accounting_on_in_its_namespace() -> None:
    ns = f"mgL5acct{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                        "net.netfilter.nf_conntrack_acct=0"], check=True)
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CODE],
                             check=True, capture_output=True, text=True).stdout.splitlines()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert out[0] == "0"
    assert out[1].startswith("(True, ") and "was 0, set to 1" in out[1]
    assert out[2] == "1"
    assert out[3].startswith("(False, ") and "already" in out[3]


def test_doctor_warns_when_accounting_is_off() -> None:
    assert judge_conntrack_accounting("1").status is Status.OK
    assert judge_conntrack_accounting("0").status is Status.WARN
    assert judge_conntrack_accounting(None).status is Status.WARN
