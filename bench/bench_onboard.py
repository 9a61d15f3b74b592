"""Benchmark: onboarding time, DHCP lease → MUD profile enforced, in the virtual home.

Every component is real (see ``tests/netns/test_dhcp_e2e.py``, whose ``OnboardHome``
this uses): busybox udhcpc sends option 161, dnsmasq leases and runs the hook, the
gateway pipeline fetches the MUD file and its signature over HTTPS from the fake
Internet, checks the CMS signature, decides, compiles, applies one nft batch and
stores the device. Devices are onboarded one after another into the same home.

Per device it records:
- ``dhcp``: the DHCP exchange as the device sees it (udhcpc start → exit): the
  same-run baseline, what a device waits for on any network;
- ``processing``: hook message received → rules in the kernel and row stored,
  *excluding* the fetch's network time (the figure the issue asks for);
- ``hook``: udhcpc's exit → the hook's message at the gateway (dnsmasq runs the
  hook after its ACK, so this can be near zero or negative);
- ``fetch``: the HTTPS fetches (MUD file + signature) over the virtual WAN.

Run as root: ``.venv/bin/python bench/bench_onboard.py [--devices N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netns.test_dhcp_e2e import Onboarded, OnboardHome


def _ms(values: list[float]) -> tuple[str, str, str]:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{p50 * 1000:8.1f}", f"{p90 * 1000:8.1f}", f"{ordered[-1] * 1000:8.1f}"


def preload(home: OnboardHome, count: int) -> None:
    """Install ``count`` other devices' rules (and rows) before measuring."""
    from mudguard.devices import Device
    from mudguard.policy import LifecycleState

    for n in range(count):
        device = Device(mac=f"06:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}",
                        state=LifecycleState.DEFAULT, ipv6=(f"2001:db8:1::2:{n:x}",))
        home.enforcer.apply_device(device, None, [])
        home.store.save_device(device)


def main() -> int:
    """Onboard N devices and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--preload", type=int, default=0,
                        help="devices already installed (home default, IPv6 only) first")
    args = parser.parse_args()
    results: list[Onboarded] = []
    with tempfile.TemporaryDirectory(prefix="mgl-bench-") as tmp, \
            OnboardHome(Path(tmp), devices=args.devices) as home:
        preload(home, args.preload)
        for i in range(args.devices):
            result = home.onboard(i)
            if result.error or result.device is None or result.device.state.value != "profiled":
                print(f"device {i}: onboarding failed: {result.error or result.device}")
                return 1
            results.append(result)
    dhcp = [r.dhcp_done - r.dhcp_start for r in results]
    hook = [r.hook_received - r.dhcp_done for r in results]
    processing = [r.processing for r in results]
    fetch = [r.fetch_seconds for r in results]
    total = [r.enforced - r.dhcp_start for r in results]
    print(f"onboarding {len(results)} devices one after another, {args.preload} already "
          f"installed (ms)")
    print(f"{'stage':44} {'p50':>8} {'p90':>8} {'max':>8}")
    for label, values in (("DHCP exchange at the device (baseline)", dhcp),
                          ("udhcpc exit → hook message at the gateway", hook),
                          ("hook → enforced + stored, without fetch", processing),
                          ("fetch: MUD file + signature over HTTPS", fetch),
                          ("udhcpc start → enforced (everything)", total)):
        print(f"{label:44} {' '.join(_ms(values))}")
    ratio = statistics.median(processing) / statistics.median(dhcp)
    print(f"processing / DHCP exchange (p50): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
