"""False alarms of learn-then-lock (issue #16): learn each device on the first part of a
capture, check the rest with the same code as ``mudguard profile check``, and count what
an owner would be told.

Method. The capture is the MADEA smart-home night (16 pcapng files in capture order,
320,000 packets, 15 labelled devices, 21:51 to 04:27: ONE NIGHT of 6.6 hours, not the
week the issue asks for; no longer labelled capture is available here). For each split
(10/25/50/75/90 % of the night's duration) and each labelled device with traffic before the
split:

1. learn: ``profile.core.learn`` on the frames before the split (the learner the
   gateway's learning uses: names from DNS answers and TLS SNI, addresses otherwise);
2. lock: ``decide()`` builds the PROFILED rules from the learned file;
3. check: every flow of the device after the split (``device_flows(every_port=True)``)
   is decided by ``evaluate()`` through ``check_flows``, the kernel's own decision, with
   the DNS answers the gateway would know (those of the learning part and of the check
   part: the DNS guard keeps names while their answers live);
4. count: a deviation is a distinct (direction, remote, protocol, server port) the
   profile drops; the owner-visible figure is deviations per device-day, scaled from
   the checked hours (checked hours × devices, said in the table) and, since the portal
   groups an open alert per device, devices that would show an alert at all.

Each deviation is put in a class (cloud server renamed under a learned domain, address
without a name, new NTP server, new LAN peer, new port of a known peer, …). The learner
then runs again with the fixes that apply (``--fixes``: what ``LearnOptions`` offers) and
the same counts are compared with the baseline of the same run (ratios). The fixed learner
also runs against the baseline as it was before MLDv1 reports/done (ICMPv6 131/132) joined
it (session 6): the deviations that change removed.

Run: ``python bench/bench_false_alarms.py [--splits 10,25,50,75,90]``; the data comes from
``bench_data.madea_night()`` (``MUDGUARD_BIG_CORPUS``, see bench/README.md).
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_data import MissingData, madea_night

from mudguard.mud import Direction, parse_mud
from mudguard.policy import NameMap, decide, registrable_domain
from mudguard.profile.capture import dns_answers, read_frames
from mudguard.profile.core import (
    CaptureHome,
    Deviation,
    LearnOptions,
    NoTrafficError,
    Observations,
    Observer,
    check_flows,
    device_facts,
    device_flows,
    home_context,
    infer_home,
    ip_text,
    learn,
    mac_bytes,
)

NTP, DNS = 123, 53


@dataclass(frozen=True, slots=True)
class DeviceResult:
    """One device at one split."""

    name: str
    learned_flows: int
    checked_flows: int
    deviations: tuple[tuple[str, str], ...]  # (class, what)


def load_night() -> tuple[list[tuple[float, bytes, int]], dict[str, str]]:
    """Every frame of the night (time order) and the labelled devices (MAC → name)."""
    paths = madea_night()
    frames = [f for path in paths for f in read_frames(path)]
    frames.sort(key=lambda f: f[0])
    with (paths[0].parent / "Device_MAC_Name_Mapping.csv").open() as fh:
        labels = {row["MAC Address"].lower(): row["Device Name"] for row in csv.DictReader(fh)}
    return frames, labels


def observe(frames: list[tuple[float, bytes, int]]) -> Observations:
    """The frames folded by the profile observer (as ``profile learn`` does)."""
    observer = Observer()
    observer.add_frames(frames, dns=dns_answers)
    return observer.finish()


def name_pairs(obs: Observations, mac: bytes) -> list[tuple[str, str]]:
    """(name, address) of the DNS answers and TLS server names the device got."""
    answers = obs.dns.get(mac, {})
    pairs = [(name, ip_text(addr)) for addr, name in answers.items()]
    pairs += [(name, ip_text(addr)) for addr, name in obs.sni.get(mac, {}).items()
              if addr not in answers]
    return pairs


def run_split(frames: list[tuple[float, bytes, int]], labels: dict[str, str], share: float,
              options: dict[str, Any]) -> tuple[list[DeviceResult], float]:
    """Learn on the first ``share`` of the night, check the rest; (results, checked hours)."""
    first, last = frames[0][0], frames[-1][0]
    cut = first + share * (last - first)
    index = next(i for i, f in enumerate(frames) if f[0] >= cut)
    before, after = observe(frames[:index]), observe(frames[index:])
    options = dict(options)
    set_aside = frozenset(options.pop("without_baseline", ()))
    if options.pop("dns_only", False):  # as the daemon records: no TLS server names
        before, after = replace(before, sni={}), replace(after, sni={})
    results = []
    for mac_text, name in labels.items():
        mac = mac_bytes(mac_text)
        home = infer_home(before, mac)
        learn_options = LearnOptions(mud_url=f"https://learned.example/{mac_text}.json",
                                     **options)
        try:
            learned = learn(before, home, learn_options)
        except NoTrafficError:
            continue
        mud = parse_mud(json.dumps(learned.document).encode()).mud
        assert mud is not None, name
        after_home = infer_home(after, mac)
        home_now = CaptureHome(device=mac, device_ips=tuple(dict.fromkeys(
            (*home.device_ips, *after_home.device_ips))),
            lan_prefixes=tuple(dict.fromkeys((*home.lan_prefixes, *after_home.lan_prefixes))),
            gateway_ips=tuple(dict.fromkeys((*home.gateway_ips, *after_home.gateway_ips))))
        context = home_context(home_now, mud.mud_url)
        policy = decide(device_facts(home_now, mud.mud_url), mud, (), context,
                        now=datetime.now(UTC))
        if set_aside:  # the baseline as it was before a change, measured in the same run
            assert set_aside <= {r.origin for r in policy.rules}, set_aside
            policy = replace(policy, rules=tuple(r for r in policy.rules
                                                 if r.origin not in set_aside))
        names = NameMap.build(name_pairs(before, mac) + name_pairs(after, mac))
        flows = device_flows(after, mac, every_port=True)
        found = check_flows(policy, flows, context, names)
        learned_names = {n.lower().rstrip(".") for n in mud.dns_names()}
        classes = {(_class(d, names, learned_names, home_now, before, mac), _what(d, names))
                   for d in found}
        results.append(DeviceResult(name=name, learned_flows=len(device_flows(before, mac)),
                                    checked_flows=len(flows),
                                    deviations=tuple(sorted(classes))))
    return results, (last - cut) / 3600


def _what(d: Deviation, names: NameMap) -> str:
    f = d.flow
    remote = f.remote
    name = next(iter(names.names_of(remote)), None)
    port = f.dst_port if f.protocol in (6, 17) else f.icmp_type
    proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 2: "igmp"}.get(f.protocol,
                                                                         str(f.protocol))
    arrow = "→" if f.direction is Direction.FROM_DEVICE else "←"
    return f"{arrow} {name or remote} {proto}/{port}"


def _class(d: Deviation, names: NameMap, learned: set[str], home: CaptureHome,
           before: Observations, mac: bytes) -> str:
    """Why a flow deviates, in the words of the method's classes."""
    f = d.flow
    remote = ipaddress.ip_address(f.remote)
    lan = any(remote.version == n.version and remote in n
              for n in (ipaddress.ip_network(p) for p in home.lan_prefixes))
    if remote.is_multicast or str(remote) == "255.255.255.255":
        return "new multicast/broadcast"
    if f.protocol in (1, 58):
        return "new ICMP"
    if str(remote) in home.gateway_ips:
        return "new service of the gateway"
    if lan:
        known = {k[3] if k[2] == mac else k[2] for k in before.services
                 if mac in (k[0], k[1])}
        peer_known = any(ip_text(a) == str(remote) for a in known)
        if peer_known:
            return "known LAN peer, new port"
        return "new LAN peer"
    if f.protocol == 17 and f.dst_port == NTP:
        return "new NTP server"
    name = next(iter(names.names_of(str(remote))), None)
    if name is None:
        return "Internet address without a name"
    if name.lower().rstrip(".") in learned:
        return "learned name, new port"
    domain = registrable_domain(name)
    if domain and any(registrable_domain(n) == domain for n in learned):
        return "new server name under a learned domain"
    return "new name"


def report(label: str, runs: dict[float, tuple[list[DeviceResult], float]]) -> dict[float, float]:
    """Print the per-split table; the deviations per device-day of each split."""
    per_day: dict[float, float] = {}
    print(f"\n== {label} ==")
    print(f"{'split':>6} {'devices':>7} {'checked h':>9} {'deviations':>10} "
          f"{'per dev-day':>11} {'devices alerted':>15}")
    for share, (results, hours) in runs.items():
        total = sum(len(r.deviations) for r in results)
        alerted = sum(1 for r in results if r.deviations)
        days = len(results) * hours / 24
        per_day[share] = total / days if days else 0.0
        print(f"{share:>6.0%} {len(results):>7} {hours:>9.2f} {total:>10} "
              f"{per_day[share]:>11.2f} {alerted:>8}/{len(results)}")
    return per_day


def classes_table(runs: dict[float, tuple[list[DeviceResult], float]]) -> None:
    """Deviations by class (all splits), with examples."""
    by_class: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for results, _ in runs.values():
        for r in results:
            for kind, what in r.deviations:
                by_class[kind] += 1
                if len(examples[kind]) < 3 and f"{r.name}: {what}" not in examples[kind]:
                    examples[kind].append(f"{r.name}: {what}")
    print(f"{'class':<42} {'count':>5}  examples")
    for kind, count in by_class.most_common():
        print(f"{kind:<42} {count:>5}  {'; '.join(examples[kind])}")


def per_device(runs: dict[float, tuple[list[DeviceResult], float]]) -> None:
    """Deviations per device at each split."""
    names = sorted({r.name for results, _ in runs.values() for r in results})
    shares = list(runs)
    print(f"{'device':<28}" + "".join(f"{s:>8.0%}" for s in shares))
    for name in names:
        row = []
        for share in shares:
            found = next((r for r in runs[share][0] if r.name == name), None)
            row.append("-" if found is None else str(len(found.deviations)))
        print(f"{name:<28}" + "".join(f"{v:>8}" for v in row))


def main() -> None:
    """Measure, print the tables, compare the fixed learner with the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default="10,25,50,75,90",
                        help="learning shares of the night, in percent (default 10,25,50,75,90)")
    args = parser.parse_args()
    try:
        frames, labels = load_night()
    except MissingData as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    hours = (frames[-1][0] - frames[0][0]) / 3600
    print(f"capture: MADEA night, {len(frames):,} packets over {hours:.1f} h (one night, "
          f"not a week), {len(labels)} labelled devices")
    shares = [int(s) / 100 for s in args.splits.split(",")]
    variants: dict[str, dict[str, Any]] = {"baseline (learner as before)": BASELINE,
                                           "fixed learner": FIXED,
                                           "fixed, DNS names only (as the daemon)": DAEMON,
                                           BEFORE_MLDV1: NO_MLDV1}
    measured: dict[str, dict[float, float]] = {}
    for label, options in variants.items():
        started = time.perf_counter()
        runs = {share: run_split(frames, labels, share, options) for share in shares}
        measured[label] = report(label, runs)
        per_device(runs)
        classes_table(runs)
        print(f"({time.perf_counter() - started:.1f} s)")
    base = measured["baseline (learner as before)"]
    for label in list(measured)[1:]:
        print(f"\nratio {label} / baseline (deviations per device-day): " + ", ".join(
            f"{s:.0%}: {measured[label][s] / base[s]:.2f}" if base[s] else f"{s:.0%}: -"
            for s in shares))
    before = measured[BEFORE_MLDV1]
    print("\nratio fixed learner / " + BEFORE_MLDV1 + ": " + ", ".join(
        f"{s:.0%}: {measured['fixed learner'][s] / before[s]:.2f}" if before[s] else f"{s:.0%}: -"
        for s in shares))


BASELINE: dict[str, Any] = {"ntp_pool_siblings": False}
FIXED: dict[str, Any] = {"ntp_pool_siblings": True}  # the learner's defaults
DAEMON: dict[str, Any] = {**FIXED, "dns_only": True}
# Session 6 (issue #16): MLDv1 reports and done (131/132) joined the baseline; the fixed
# learner locked to the baseline without them shows what that removed.
BEFORE_MLDV1 = "fixed, baseline without MLDv1 (before session 6)"
NO_MLDV1: dict[str, Any] = {**FIXED,
                            "without_baseline": ("baseline/mldv1-report", "baseline/mldv1-done")}

if __name__ == "__main__":
    main()
