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

Run: ``.venv/bin/python bench/bench_identify.py [--split tuned|held-out|all]
[--no-registry]`` (``--no-registry``: without Home Assistant's discovery matchers).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import struct
import sys
import time

from bench_data import SMALL_CORPUS, MissingData, madea_night

from mudguard.identify.capture import (
    CaptureScan,
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
                        help="also what the daemon stores: the night's mDNS/SSDP frames and "
                             "DNS answers fed through its live path, then the end of "
                             "learning")
    parser.add_argument("--no-announcements", action="store_true",
                        help="with --daemon: leave out the mDNS/SSDP frames (what they add)")
    parser.add_argument("--no-registry", action="store_true",
                        help="leave out Home Assistant's discovery matchers (what they add)")
    parser.add_argument("--web", action="store_true",
                        help="with --daemon: also the web flows the kernel logs for devices "
                             "without a MUD file (SNI, User-Agent, TLS 1.2 certificates)")
    args = parser.parse_args()
    try:
        night = madea_night()
    except MissingData as missing:
        print(f"bench_identify: {missing}", file=sys.stderr)
        return 1
    kb, oui = load_knowledge(), load_oui_registry()
    if args.no_registry:
        kb = dataclasses.replace(kb, discovery=None)
    elif kb.discovery is not None:
        print(f"with Home Assistant {kb.discovery.version}'s discovery matchers "
              f"({len(kb.discovery.integrations)} integrations)")
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
        if name == "madea-smarthome" and kb.discovery is not None:
            decision_cost(scan, [mac_bytes(m) for m in macs], kb, oui)
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
        daemon_view(kb, oui, args.split, announcements=not args.no_announcements,
                    web=args.web)
    return 0


def decision_cost(scan: CaptureScan, macs: list[bytes], kb: KnowledgeBase,
                  oui: OuiRegistry | None, rounds: int = 200) -> None:
    """Time one decision per device, with and without Home Assistant's matchers
    (interleaved rounds, so load on the machine hits both alike)."""
    without = dataclasses.replace(kb, discovery=None)
    spent = [0.0, 0.0]
    for _ in range(rounds):
        for index, base in enumerate((without, kb)):
            started = time.perf_counter()
            for mac in macs:
                identify_scan(scan, mac, base, oui)
            spent[index] += time.perf_counter() - started
    per = [t / (rounds * len(macs)) * 1e6 for t in spent]
    print(f"  one decision: {per[1]:.0f} us with the registry, {per[0]:.0f} us without "
          f"(x{per[1] / per[0]:.2f}), mean over {len(macs)} devices x {rounds}")


def announcement_or_dns_answer(frame: bytes) -> tuple[str, int, int, bytes] | None:
    """``("announce", sport, dport, b"")`` for a frame the sniffer's BPF filter passes
    (unfragmented IPv4 or IPv6 UDP, port 5353 or 1900), ``("dns", …, payload)`` for a
    DNS answer to a device (UDP from port 53: what the DNS guard would have answered),
    ``("dhcp", …, payload)`` for a client's DHCP message (what the lease hook passes)."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800 and len(frame) >= 34 and frame[23] == 17 \
            and not struct.unpack_from("!H", frame, 20)[0] & 0x1FFF:
        udp = 14 + (frame[14] & 0x0F) * 4
    elif ethertype == 0x86DD and len(frame) >= 62 and frame[20] == 17:
        udp = 54
    else:
        return None
    if len(frame) < udp + 8:
        return None
    sport, dport = struct.unpack_from("!HH", frame, udp)
    if {sport, dport} & {5353, 1900}:
        return "announce", sport, dport, b""
    if sport == 53:
        return "dns", sport, dport, frame[udp + 8:]
    if (sport, dport) == (68, 67):
        return "dhcp", sport, dport, frame[udp + 8:]
    return None


def daemon_view(kb: KnowledgeBase, oui: OuiRegistry | None, wanted: str, *,
                announcements: bool = True, web: bool = False) -> None:
    """What the daemon stores, fed the night's frames through its live path:

    - every frame its packet socket's filter passes (mDNS, SSDP) to
      ``LiveIdentifier.on_frame``, at the capture's pace (its per-MAC rate limit and the
      sniffer's budget of frames per second are applied on capture time);
    - every name a DNS answer to a device carries (with addresses), as the DNS guard
      tells ``on_name``;
    - each DHCP request's hostname, vendor class and parameter request list, as the
      lease hook hands them to ``enrich`` (which fills what is unknown);
    - a device that sends no DHCP request in the night is given a lease with no
      options at its first frame (every device gets one when it joins; the night began
      later): ``enrich`` then decides on its OUI and whatever was gathered;
    - every 5 s of capture time, ``updates()`` applied as ``DeviceService.identified``
      would (no label, no MUD file: each update fills or improves its own value);
    - with ``web``, what the identification rules log (``policy._data._identify_rules``)
      goes through ``identify.observe.WebObserver`` to ``on_web``: a device's first
      payload on each TCP flow to 443/8443/80/8080 (at most 40 per device per second of
      capture, the kernel's burst), the server's segments on those flows (the observer
      reads only flows a ClientHello opened and closes them at the certificate);
    - then, at the end of learning, ``from_learning`` with the DNS names of the learned
      connections fills what is still unknown.
    Stored at confidence >= 0.5."""
    from mudguard.devices import Device, MudSource
    from mudguard.discovery.announce_sniff import FRAMES_PER_SECOND
    from mudguard.discovery.sighting import Sighting
    from mudguard.identify.live import LiveEvidence, LiveIdentifier
    from mudguard.identify.observe import WebObserver, tcp_segment
    from mudguard.identify.parse import parse_dhcp
    from mudguard.profile.capture import dns_answers, read_frames
    from mudguard.profile.core import Observer, device_flows

    class CaptureClock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = CaptureClock()
    live = LiveIdentifier(kb, oui, evidence=LiveEvidence(clock=clock))
    stored: dict[str, tuple[str | None, str | None]] = {}
    observer = Observer()
    announced = dropped = 0
    window, budget, next_update = -1, FRAMES_PER_SECOND, 0.0
    took = 0.0

    def apply(updates: list) -> None:  # type: ignore[type-arg]
        for update in updates:
            maker, kind = stored.get(update.mac, (None, None))
            if update.maker and maker in (None, update.replaces_maker):
                maker = update.maker
            if update.kind and kind in (None, update.replaces_kind):
                kind = update.kind
            stored[update.mac] = (maker, kind)

    watcher = WebObserver(clock=clock)
    web_flows: set[tuple[str, int, str, int]] = set()
    web_logged: dict[str, tuple[int, int]] = {}  # device -> (second, packets logged in it)
    web_facts = 0

    def web_frame(frame: bytes, ts: float) -> None:
        nonlocal web_facts
        if len(frame) < 54 or struct.unpack_from("!H", frame, 12)[0] not in (0x0800, 0x86DD):
            return
        segment = tcp_segment(frame[14:])
        if segment is None or not segment.payload:
            return
        sender = ":".join(f"{b:02x}" for b in frame[6:12])
        receiver = ":".join(f"{b:02x}" for b in frame[0:6])
        key = (segment.src, segment.sport, segment.dst, segment.dport)
        if sender in TRUTH and segment.dport in (443, 8443, 80, 8080):
            if key in web_flows or len(web_flows) > 100_000:
                return
            web_flows.add(key)
            second, count = web_logged.get(sender, (int(ts), 0))
            second, count = (second, count) if second == int(ts) else (int(ts), 0)
            web_logged[sender] = (second, count + 1)
            if count >= 40:
                return
            facts = watcher.client(sender, segment)
            if facts:
                web_facts += 1
                live.on_web(sender, facts)
        elif receiver in TRUTH and segment.sport in (443, 8443):
            found = watcher.server(segment)
            if found is not None and found[1]:
                web_facts += 1
                live.on_web(found[0], found[1])

    leased: set[str] = set()
    dhcp_clients = {mac for mac in TRUTH if mac in dhcp_requesters()}

    def lease(client: str, facts: dict[str, str]) -> None:
        leased.add(client)
        found = live.enrich(Sighting(
            mac=client, source=MudSource.DHCP4, hostname=facts.get("hostname"),
            vendor_class=facts.get("vendor_class"), prl=facts.get("prl")))
        maker, kind = stored.get(client, (None, None))
        stored[client] = (maker or found.manufacturer, kind or found.kind)

    def frames():  # type: ignore[no-untyped-def]
        nonlocal announced, dropped, window, budget, next_update, took
        for path in madea_night():
            for ts, frame, length in read_frames(path):
                yield ts, frame, length
                sender = ":".join(f"{b:02x}" for b in frame[6:12])
                if sender in TRUTH and sender not in leased and sender not in dhcp_clients:
                    clock.now = ts
                    lease(sender, {})
                if web:
                    clock.now = ts
                    web_frame(frame, ts)
                seen = announcement_or_dns_answer(frame)
                if seen is None:
                    continue
                clock.now = ts
                started = time.perf_counter()
                if seen[0] == "announce":
                    if not announcements:
                        continue
                    if int(ts) != window:
                        window, budget = int(ts), FRAMES_PER_SECOND
                    if budget > 0:
                        budget -= 1
                        announced += 1
                        live.on_frame(frame)
                    else:
                        dropped += 1
                elif seen[0] == "dhcp":
                    lease(sender, dict(parse_dhcp(seen[3])))
                elif not frame[0] & 1:
                    receiver = ":".join(f"{b:02x}" for b in frame[0:6])
                    for name in dict.fromkeys(n for n, _ in dns_answers(seen[3]) or ()):
                        live.on_name(receiver, name)
                if ts >= next_update:
                    apply(live.updates())
                    next_update = ts + 5.0
                took += time.perf_counter() - started

    observer.add_frames(frames(), dns=dns_answers)
    apply(live.updates(limit=10_000))
    obs = observer.finish()
    print(f"\ndaemon, live: {announced} mDNS/SSDP frames read ({dropped} over the sniffer's "
          f"budget), {live.evidence.limited} over a MAC's rate; "
          f"{took * 1e6 / max(1, announced):.0f} us of Python per frame read, all included")
    if web:
        print(f"web flows: {watcher.packets} logged packets read, {web_facts} with facts, "
              f"{watcher.certificates} certificates read, {watcher.over_budget} over budget")
    counts: dict[str, list[int]] = {}
    print("stored by the daemon (live, then + end of learning: OUI + DNS names of the "
          "learned connections; >= 0.5):")
    for mac, (label, aliases, kind, split) in TRUTH.items():
        if (wanted != "all" and split != wanted) or mac_bytes(mac) not in obs.mac_packets:
            continue
        answered = obs.dns.get(mac_bytes(mac), {})
        names = list(dict.fromkeys(f.remote_name for f in device_flows(obs, mac_bytes(mac))
                                   if f.remote_name and any(
                                       answered.get(a) == f.remote_name for a in answered)))
        live_maker, live_kind = stored.get(mac, (None, None))
        end_maker, end_kind = live.from_learning(Device(mac=mac), names)
        maker, found = live_maker or end_maker, live_kind or end_kind
        tally = counts.setdefault(split, [0] * 9)
        tally[0] += 1
        tally[1] += maker_right(live_maker, aliases)
        tally[2] += live_maker is not None
        tally[3] += live_kind == kind
        tally[4] += live_kind is not None
        tally[5] += maker_right(maker, aliases)
        tally[6] += maker is not None
        tally[7] += found == kind
        tally[8] += found is not None
        print(f"  {split:9} {label:28} live {live_maker} / {live_kind}; "
              f"+ end of learning ({len(names)} names) {maker} / {found}")
    for split, t in counts.items():
        print(f"{split:9}: {t[0]} devices; live: maker stored {t[2]}, right {t[1]}/{t[0]}; "
              f"kind stored {t[4]}, right {t[3]}/{t[0]}")
        print(f"{'':9}  + end of learning: maker stored {t[6]}, right {t[5]}/{t[0]}; "
              f"kind stored {t[8]}, right {t[7]}/{t[0]}")


def dhcp_requesters() -> set[str]:
    """The MACs that send a DHCP request somewhere in the night."""
    from mudguard.profile.capture import read_frames

    found: set[str] = set()
    for path in madea_night():
        for _ts, frame, _length in read_frames(path):
            seen = announcement_or_dns_answer(frame)
            if seen is not None and seen[0] == "dhcp":
                found.add(":".join(f"{b:02x}" for b in frame[6:12]))
    return found


def maker_right(maker: str | None, aliases: tuple[str, ...]) -> bool:
    """Whether a stored maker names the true one (or an alias)."""
    return maker is not None and any(a in maker.lower() for a in aliases)


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
