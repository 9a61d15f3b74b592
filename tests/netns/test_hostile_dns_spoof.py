"""DNS queries sent with another device's source address never reach the gateway.

The DNS guard keys a query's device by its source address, so the kernel must drop a
query whose source is not the sender's own. Real nftables (the compiled home and two
devices through the real ``Enforcer``) in a virtual home: d0 adds d1's address to its
interface and sends UDP datagrams to the gateway's port 53 from both; a recorder on the
gateway's port 53 sees only d0's own source.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from mudguard.enforce import Enforcer, Nft
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import GW4, VirtualHome, run

pytestmark = pytest.mark.root

RECORDER = """
import json, select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
got = []
end = time.monotonic() + 20
while time.monotonic() < end:
    ready, _, _ = select.select([s, sys.stdin], [], [], 0.5)
    if sys.stdin in ready:
        break
    if s in ready:
        data, peer = s.recvfrom(512)
        got.append([peer[0], data.decode(errors="replace")])
print(json.dumps(got), flush=True)
"""


@pytest.fixture
def home() -> Iterator[VirtualHome]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces and nftables")
    with VirtualHome(prefix=f"mgr{os.getpid() % 10000}", devices=2) as h:
        yield h


def send_from(source: str, payload: str) -> None:
    """Inside a device namespace: three datagrams to the gateway's port 53."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for _ in range(3):
            sock.sendto(payload.encode(), (GW4, 53))
            time.sleep(0.02)


def test_query_with_another_devices_source_is_dropped(home: VirtualHome) -> None:
    enforcer = Enforcer(Nft.in_namespace(home.gw_ns), home.context())
    enforcer.install_home()
    d0, d1 = home.nodes
    for node in (d0, d1):
        enforcer.apply_device(DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                                          state=LifecycleState.DEFAULT), None, ())
    run(["ip", "addr", "add", f"{d1.ipv4}/32", "dev", d0.iface], ns=d0.ns)
    recorder = subprocess.Popen(["ip", "netns", "exec", home.gw_ns, sys.executable, "-c",
                                 RECORDER, GW4], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert recorder.stdout is not None and recorder.stdout.readline().strip() == "ready"
        home.call(d0.ns, send_from, d0.ipv4, "own")
        home.call(d0.ns, send_from, d1.ipv4, "forged")
        time.sleep(0.2)
        out, _ = recorder.communicate(input="", timeout=10)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(timeout=5)
    got = {tuple(pair) for pair in json.loads(out.strip().splitlines()[-1])}
    assert (d0.ipv4, "own") in got  # the gateway's DNS port is reachable for d0 itself
    assert all(payload != "forged" for _, payload in got), got
