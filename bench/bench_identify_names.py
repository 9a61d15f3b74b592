"""Maker and kind from DNS names alone: the UNSW MUD profiles as a fair evaluation.

Input: the 28 MUD files UNSW generated from real consumer devices' traffic
(``tests/data/corpus/mud/unsw``, see its ``PROVENANCE.md``; Hamza et al., "Clear as
MUD", IoT S&P 2018). Each file names its device (file name, ``systeminfo``) and lists
the DNS names the device talks to. For each device, every name its MUD file lists is
fed to the daemon's DNS-name path (``LiveIdentifier.on_name``, then the one decision
``identify_device``), with no OUI and no other clue: what the gateway's DNS guard alone
would learn of it.

The labels below (true maker aliases and acceptable kinds) were written from the
devices' names only, and committed before any knowledge was added for this bench.
The split was fixed at the same time, before any rule was written: files sorted by
lower-case name, the 1st, 3rd, 5th… are TUNED (their names could be looked at while
widening knowledge.json), the 2nd, 4th, 6th… are HELD-OUT (their names were not
looked at; only general public knowledge of the makers' clouds was added).

A maker is right when one alias is in the predicted manufacturer, wrong when another
maker is predicted, none when no maker is predicted. A kind is right when the
predicted kind is one of the acceptable kinds (``iot`` for a device no kind in the
list fits: a talking doll, a photo frame; then no kind is right too), none when no
specific kind is predicted.

Run: ``.venv/bin/python bench/bench_identify_names.py [--split tuned|held-out|all]``.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mudguard.identify.capture import load_knowledge
from mudguard.identify.decide import GENERIC_KIND, Identification
from mudguard.identify.live import LiveIdentifier
from mudguard.profile.core import mac_bytes

MUD_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "corpus" / "mud" / "unsw"
DEVICE_MAC = "00:00:5e:00:53:01"  # documentation MAC (RFC 7042); no OUI registry is used

# file: (device, maker aliases, acceptable kinds), written from the names only
LABELS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "amazonEchoMud.json": ("Amazon Echo", ("amazon",), ("speaker",)),
    "augustdoorbellcamMud.json": ("August doorbell camera", ("august", "yale", "assa"),
                                  ("doorbell", "camera")),
    "awairAirQualityMud.json": ("Awair air quality monitor", ("awair",), ("sensor",)),
    "belkincameraMud.json": ("Belkin NetCam camera", ("belkin",), ("camera",)),
    "blipcareBPmeterMud.json": ("Blipcare blood pressure meter", ("blipcare",), ("sensor",)),
    "canaryCameraMud.json": ("Canary camera", ("canary",), ("camera",)),
    "chromecastUltraMud.json": ("Google Chromecast Ultra", ("google",), ("tv",)),
    "dropcamMud.json": ("Dropcam", ("dropcam", "nest", "google"), ("camera",)),
    "hellobarbieMud.json": ("Mattel Hello Barbie doll", ("mattel", "toytalk"), ("iot",)),
    "hpprinterMud.json": ("HP printer", ("hp",), ("printer",)),
    "HueBulbMud.json": ("Philips Hue (bulb behind its bridge)", ("philips", "signify"),
                        ("bulb", "hub")),
    "ihomepowerplugMud.json": ("iHome power plug", ("ihome",), ("plug",)),
    "lifxbulbMud.json": ("LIFX bulb", ("lifx",), ("bulb",)),
    "NetatmoCameraMud.json": ("Netatmo Welcome camera", ("netatmo",), ("camera",)),
    "NetatmoWeatherStationMud.json": ("Netatmo weather station", ("netatmo",), ("sensor",)),
    "nestsmokesensorMud.json": ("Nest Protect smoke alarm", ("nest", "google"),
                                ("smoke_alarm",)),
    "pixstarphotoframeMud.json": ("Pix-Star photo frame", ("pix-star", "pixstar"), ("iot",)),
    "ringdoorbellMud.json": ("Ring doorbell", ("ring",), ("doorbell",)),
    "samsungsmartcamMud.json": ("Samsung SmartCam", ("samsung", "hanwha"), ("camera",)),
    "SmartThingsMud.json": ("Samsung SmartThings hub", ("samsung", "smartthings"), ("hub",)),
    "tplinkcameraMud.json": ("TP-Link camera", ("tp-link",), ("camera",)),
    "tplinkplugMud.json": ("TP-Link plug", ("tp-link",), ("plug",)),
    "tribyspeakerMud.json": ("Invoxia Triby speaker", ("invoxia", "triby"), ("speaker",)),
    "wemomotionMud.json": ("Belkin WeMo motion sensor", ("belkin",), ("sensor",)),
    "wemoswitchMud.json": ("Belkin WeMo switch", ("belkin",), ("plug",)),
    "withingsbabymonitorMud.json": ("Withings baby monitor", ("withings",), ("camera",)),
    "withingscardioMud.json": ("Withings Body Cardio scale", ("withings",), ("scale",)),
    "withingssleepsensorMud.json": ("Withings Aura sleep sensor", ("withings",), ("sensor",)),
}


def split_of(file_name: str) -> str:
    """TUNED for the 1st, 3rd, … file by lower-case name; HELD-OUT for the others."""
    order = sorted(LABELS, key=str.lower)
    return "tuned" if order.index(file_name) % 2 == 0 else "held-out"


def mud_names(path: Path) -> list[str]:
    """The DNS names the MUD file at ``path`` lists (any ``…dnsname`` member), sorted.
    Read from the JSON, not the parser: some of these draft-era files do not validate."""
    names: set[str] = set()
    stack: list[object] = [json.loads(path.read_text(encoding="utf-8"))]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, member in value.items():
                if str(key).endswith("dnsname") and isinstance(member, str):
                    names.add(member.lower().rstrip("."))
                else:
                    stack.append(member)
        elif isinstance(value, list):
            stack.extend(value)
    return sorted(names)


def identify_from_names(names: list[str]) -> Identification:
    """What the daemon decides of a device that asked only for ``names``."""
    live = LiveIdentifier(load_knowledge(), None)
    for name in names:
        live.on_name(DEVICE_MAC, name)
    return live.identification(mac_bytes(DEVICE_MAC))


def grade(predicted: str | None, right: bool) -> str:
    """``right``, ``wrong`` or ``none``."""
    return "none" if predicted is None else "right" if right else "wrong"


def main() -> int:
    """Print each device's maker and kind from its MUD file's names, and the totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tuned", "held-out", "all"), default="all")
    args = parser.parse_args()
    totals: dict[str, dict[str, int]] = {}
    print(f"{'device':38} {'split':8} {'names':>5}  {'maker':32} {'':5}  {'kind':11} ")
    for file_name in sorted(LABELS, key=str.lower):
        split = split_of(file_name)
        if args.split not in ("all", split):
            continue
        device, aliases, kinds = LABELS[file_name]
        names = mud_names(MUD_DIR / file_name)
        result = identify_from_names(names)
        maker = result.manufacturer
        maker_grade = grade(maker, any(a in (maker or "").lower() for a in aliases))
        kind = result.kind
        if kind == GENERIC_KIND and GENERIC_KIND not in kinds:
            kind = None
        kind_grade = grade(kind, kind in kinds)
        for key in (split, "all"):
            count = totals.setdefault(key, {})
            for attribute, said in (("maker", maker_grade), ("kind", kind_grade)):
                count[f"{attribute} {said}"] = count.get(f"{attribute} {said}", 0) + 1
            count["devices"] = count.get("devices", 0) + 1
        print(f"{device[:38]:38} {split:8} {len(names):5}  {maker!s:32.32} "
              f"{maker_grade:5}  {kind!s:11} {kind_grade}")
    print()
    for key in ("tuned", "held-out", "all"):
        count = totals.get(key)
        if not count:
            continue
        n = count["devices"]
        print(f"{key:8} ({n:2} devices): maker right {count.get('maker right', 0):2} "
              f"wrong {count.get('maker wrong', 0):2} none {count.get('maker none', 0):2}"
              f" | kind right {count.get('kind right', 0):2} "
              f"wrong {count.get('kind wrong', 0):2} none {count.get('kind none', 0):2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
