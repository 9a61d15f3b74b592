"""Accuracy of ``mudguard identify`` on labelled captures of real devices.

Inputs (the big data set is found by ``bench_data.madea_night``: ``$MUDGUARD_BIG_CORPUS``,
else the reference corpus beside the repository; the small one is in ``tests/data/corpus``):

- ``pcap/madea-smarthome``: one night of a 14-device smart home (16 pcapng files,
  read one after the other as one capture), labelled by the dataset's
  ``Device_MAC_Name_Mapping.csv``;
- ``pcap/smartercoffee``: 15 setup captures of one coffee machine.

The split was fixed before any rule was written: the knowledge base was tuned
while looking only at the TUNED devices' traffic; the HELD-OUT devices' traffic
was never inspected (their names were known, the rules come from makers'
public product ranges, domains and protocol documents). Each device counts once.
A prediction is right when the true maker's name (or an alias) is in the
predicted manufacturer, and when the predicted kind equals the true kind;
``None``/``iot`` is wrong.

Run: ``.venv/bin/python bench/bench_identify.py [--split tuned|held-out|all]``.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench_data import SMALL_CORPUS, MissingData, madea_night

from mudguard.identify.capture import (
    identify_scan,
    load_knowledge,
    load_oui_registry,
    scan_captures,
)
from mudguard.identify.knowledge import KnowledgeBase, OuiRegistry
from mudguard.profile.core import mac_bytes

# mac: (label, maker aliases, kind, split)
TRUTH = {
    "24:ce:33:24:b5:cb": ("Amazon Plug", ("amazon",), "plug", "tuned"),
    "7c:f6:66:1f:a8:b6": ("HBN Plug", ("hbn",), "plug", "tuned"),
    "b0:73:9c:e6:9a:b9": ("Blink Mini Camera", ("blink", "amazon"), "camera", "tuned"),
    "64:16:66:49:3e:cb": ("Nest Camera", ("nest", "google"), "camera", "tuned"),
    "50:8a:06:4b:c5:c7": ("Lumiman Bulb", ("lumiman",), "bulb", "tuned"),
    "e4:5f:01:c3:64:86": ("RPi Emulated Bulb", ("raspberry",), "bulb", "tuned"),
    "34:6f:92:1d:ba:50": ("Sensi Thermostat", ("sensi", "emerson", "copeland"), "thermostat",
                          "tuned"),
    "5c:cf:7f:07:ae:fb": ("SmarterCoffee", ("smarter",), "appliance", "tuned"),
    "90:48:6c:06:8f:74": ("Ring Doorbell", ("ring", "amazon"), "doorbell", "held-out"),
    "d8:0d:17:33:c2:52": ("Kasa Bulb", ("tp-link", "kasa"), "bulb", "held-out"),
    "d0:73:d5:12:8e:30": ("Lifx bulb", ("lifx",), "bulb", "held-out"),
    "34:ab:95:f6:82:94": ("Ultraloq Smart Lock", ("u-tec", "ultraloq"), "lock", "held-out"),
    "70:74:14:c0:db:f0": ("Rachio Sprinkler Controller", ("rachio",), "sprinkler", "held-out"),
    "d0:c5:d3:90:54:73": ("Roomba Robot", ("irobot", "roomba"), "vacuum", "held-out"),
    "e6:ce:94:c8:64:43": ("Pixel 6 Phone", ("google", "pixel"), "phone", "held-out"),
    "cc:a7:c1:62:cc:aa": ("Nest Smoke & CO Detector", ("nest", "google"), "smoke_alarm",
                          "held-out"),
}


def main() -> int:
    """Identify every labelled device and print per-device results and accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=("tuned", "held-out", "all"), default="all")
    parser.add_argument("--per-file", action="store_true",
                        help="also identify each MADEA file (20-30 min) on its own")
    parser.add_argument("--daemon", action="store_true",
                        help="also what the daemon stores at the end of learning (OUI and "
                             "the DNS names of the learned connections only)")
    args = parser.parse_args()
    try:
        night = madea_night()
    except MissingData as missing:
        print(f"bench_identify: {missing}", file=sys.stderr)
        return 1
    kb, oui = load_knowledge(), load_oui_registry()
    if oui is None:
        print("bench_identify: no OUI registry (install libwireshark-data)", file=sys.stderr)
    coffee = "5c:cf:7f:07:ae:fb"
    inputs = {"madea-smarthome": (night, [m for m in TRUTH if m != coffee]),
              "smartercoffee": (sorted((SMALL_CORPUS / "pcap" / "smartercoffee").glob("*.pcap")),
                                [coffee])}
    rows: list[tuple[str, str, bool, bool, str, str]] = []
    named_kinds: dict[str, list[int]] = {}  # split → [kinds named, of which right]
    for name, (files, macs) in inputs.items():
        started = time.perf_counter()
        scan = scan_captures(files)
        took = time.perf_counter() - started
        print(f"{name}: {len(files)} files, {scan.stats.records} packets, "
              f"scanned in {took:.1f} s ({scan.stats.records / took:,.0f} packets/s)")
        for mac in macs:
            label, aliases, kind, split = TRUTH[mac]
            if args.split != "all" and split != args.split:
                continue
            device = scan.devices.get(mac_bytes(mac))
            if device is None or not device.packets_sent:
                print(f"  {label}: sends nothing in the capture: not scored")
                continue
            result = identify_scan(scan, mac_bytes(mac), kb, oui)
            maker_ok = any(a in (result.manufacturer or "").lower() for a in aliases)
            kind_ok = result.kind == kind
            named = result.kind not in (None, "iot")
            named_kinds[split] = [named_kinds.get(split, [0, 0])[0] + named,
                                  named_kinds.get(split, [0, 0])[1] + (named and kind_ok)]
            rows.append((split, label, maker_ok, kind_ok,
                         f"{aliases[0]} / {kind}",
                         f"{result.manufacturer} / {result.kind} ({result.confidence:.2f})"))
    print(f"\n{'split':9} {'device':28} {'truth':26} {'predicted':46} maker kind")
    for split, label, maker_ok, kind_ok, truth, predicted in rows:
        print(f"{split:9} {label:28} {truth:26} {predicted:46} "
              f"{'ok' if maker_ok else '--':5} {'ok' if kind_ok else '--'}")
    print()
    for split in ("tuned", "held-out"):
        part = [r for r in rows if r[0] == split]
        if part:
            makers = sum(r[2] for r in part)
            kinds = sum(r[3] for r in part)
            print(f"{split:9}: {len(part)} devices; manufacturer right {makers}/{len(part)} "
                  f"({makers / len(part):.0%}), kind right {kinds}/{len(part)} "
                  f"({kinds / len(part):.0%})")
            named, right = named_kinds.get(split, [0, 0])
            print(f"{'':9}  a specific kind was named for {named}/{len(part)}; "
                  f"of those right {right}/{named}" + (f" ({right / named:.0%})" if named else ""))
    print("baseline: IoT Sentinel (ICDCS 2017), 81.5 % device-type accuracy over 27 types "
          "from setup traffic")
    if args.per_file:
        per_file(kb, oui, args.split)
    if args.daemon:
        daemon_view(kb, oui, args.split)
    return 0


def daemon_view(kb: KnowledgeBase, oui: OuiRegistry | None, wanted: str) -> None:
    """What the daemon stores at the end of a device's learning (``DhcpIdentifier.
    from_learning``): the MAC's OUI and the DNS names its connections went to (the
    names the DNS guard gave, as the learned flow records carry them: DNS answers to
    the device, no SNI, no mDNS/SSDP), kept at confidence >= 0.5; no hostname (the
    night holds no DHCP exchange)."""
    from mudguard.devices import Device
    from mudguard.identify.live import DhcpIdentifier
    from mudguard.profile.capture import dns_answers, read_frames
    from mudguard.profile.core import Observer, device_flows

    observer = Observer()
    for path in madea_night():
        observer.add_frames(read_frames(path), dns=dns_answers)
    obs = observer.finish()
    identifier = DhcpIdentifier(kb, oui)
    counts: dict[str, list[int]] = {}
    print("\nat the end of learning (daemon: OUI + DNS names of the learned connections; "
          "stored at >= 0.5):")
    for mac, (label, aliases, kind, split) in TRUTH.items():
        if (wanted != "all" and split != wanted) or mac_bytes(mac) not in obs.mac_packets:
            continue
        answered = obs.dns.get(mac_bytes(mac), {})
        names = list(dict.fromkeys(f.remote_name for f in device_flows(obs, mac_bytes(mac))
                                   if f.remote_name and any(
                                       answered.get(a) == f.remote_name for a in answered)))
        maker, found = identifier.from_learning(Device(mac=mac), names)
        tally = counts.setdefault(split, [0, 0, 0, 0, 0])
        tally[0] += 1
        tally[1] += maker is not None and any(a in maker.lower() for a in aliases)
        tally[2] += maker is not None
        tally[3] += found == kind
        tally[4] += found is not None
        print(f"  {split:9} {label:28} {len(names):3} names -> {maker} / {found}")
    for split, (n, makers, stored, kinds, kinds_stored) in counts.items():
        print(f"{split:9}: {n} devices; maker stored {stored}, right {makers}/{n}; "
              f"kind stored {kinds_stored}, right {kinds}/{n}")


def per_file(kb: KnowledgeBase, oui: OuiRegistry | None, wanted: str) -> None:
    """Accuracy when each 20-30 min file is a capture of its own (device × file samples)."""
    counts: dict[str, list[int]] = {}
    for path in madea_night():
        scan = scan_captures([path])
        for mac, (_label, aliases, kind, split) in TRUTH.items():
            device = scan.devices.get(mac_bytes(mac))
            if (wanted != "all" and split != wanted) or device is None \
                    or not device.packets_sent:
                continue
            result = identify_scan(scan, mac_bytes(mac), kb, oui)
            tally = counts.setdefault(split, [0, 0, 0])
            tally[0] += 1
            tally[1] += any(a in (result.manufacturer or "").lower() for a in aliases)
            tally[2] += result.kind == kind
    print("\nper file (each of the 16 MADEA files alone; samples = device x file):")
    for split, (n, makers, kinds) in counts.items():
        print(f"{split:9}: {n} samples; manufacturer right {makers / n:.0%}, "
              f"kind right {kinds / n:.0%}")


if __name__ == "__main__":
    sys.exit(main())
