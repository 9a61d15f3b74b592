"""Maker from the MAC alone, with and without Home Assistant's discovery matchers.

Input: the MAC addresses and names of the UNSW IoT traces' devices (Sivanathan et al.,
"Classifying IoT Devices in Smart Environments Using Network Traffic Characteristics",
IEEE TMC 2018; the dataset's ``List_Of_Devices``), written below: no capture is read,
so this measures only what the OUI (Wireshark's ``manuf``) and the registry's MAC
prefixes say. None of these devices was looked at when writing knowledge.json or the
registry import; the list was first run after both were written, and one change
followed that run: a MAC prefix Home Assistant pairs with a hostname pattern no longer
counts alone (the photo frame's E0:76:D0, AMPAK's, had been named August's, i.e. Yale).
A prediction is right when one of the device's maker aliases is in the predicted
manufacturer.

Run: ``.venv/bin/python bench/bench_identify_macs.py``. Not part of the test suite.
"""

from __future__ import annotations

import dataclasses
import sys

from mudguard.identify.capture import load_knowledge, load_oui_registry
from mudguard.identify.decide import identify
from mudguard.profile.core import mac_bytes

# mac: (device, maker aliases)
UNSW = {
    "d0:52:a8:00:67:5e": ("Samsung SmartThings hub", ("smartthings", "physical graph",
                                                      "samsung")),
    "44:65:0d:56:cc:d3": ("Amazon Echo", ("amazon",)),
    "70:ee:50:18:34:43": ("Netatmo Welcome", ("netatmo",)),
    "f4:f2:6d:93:51:f1": ("TP-Link Day Night Cloud camera", ("tp-link",)),
    "00:16:6c:ab:6b:88": ("Samsung SmartCam", ("samsung",)),
    "30:8c:fb:2f:e4:b2": ("Dropcam", ("dropcam", "nest", "google")),
    "00:62:6e:51:27:2e": ("Insteon Camera (wired)", ("insteon",)),
    "e8:ab:fa:19:de:4f": ("Insteon Camera (wireless)", ("insteon",)),
    "00:24:e4:11:18:a8": ("Withings Smart Baby Monitor", ("withings",)),
    "ec:1a:59:79:f4:89": ("Belkin Wemo switch", ("belkin",)),
    "50:c7:bf:00:56:39": ("TP-Link Smart plug", ("tp-link",)),
    "74:c6:3b:29:d7:1d": ("iHome plug", ("ihome",)),
    "ec:1a:59:83:28:11": ("Belkin Wemo motion sensor", ("belkin",)),
    "18:b4:30:25:be:e4": ("Nest Protect smoke alarm", ("nest", "google")),
    "70:ee:50:03:b8:ac": ("Netatmo weather station", ("netatmo",)),
    "00:24:e4:1b:6f:96": ("Withings Smart scale", ("withings",)),
    "74:6a:89:00:2e:25": ("Blipcare blood pressure meter", ("blipcare",)),
    "00:24:e4:20:28:c6": ("Withings Aura sleep sensor", ("withings",)),
    "d0:73:d5:01:83:08": ("LIFX bulb", ("lifx",)),
    "18:b7:9e:02:20:44": ("Triby speaker", ("invoxia", "triby")),
    "e0:76:d0:33:bb:85": ("PIX-STAR photo frame", ("pix-star",)),
    "70:5a:0f:e4:9b:c0": ("HP printer", ("hp",)),
}


def main() -> int:
    """Print each device's maker with and without the registry, and the totals."""
    oui = load_oui_registry()
    if oui is None:
        print("bench_identify_macs: no OUI registry (install libwireshark-data)",
              file=sys.stderr)
        return 1
    with_registry = load_knowledge()
    without = dataclasses.replace(with_registry, discovery=None)
    right = [0, 0]
    print(f"{'device':32} {'OUI only':28} {'OUI + registry':28} registry says")
    for mac, (label, aliases) in UNSW.items():
        row = []
        for index, kb in enumerate((without, with_registry)):
            result = identify(mac_bytes(mac), [], kb, oui)
            ok = any(a in (result.manufacturer or "").lower() for a in aliases)
            right[index] += ok
            row.append((f"{result.manufacturer} {'ok' if ok else '--'}", result))
        said = [e.says for e in row[1][1].evidence if e.source == "home_assistant_registry"]
        print(f"{label:32} {row[0][0]:28} {row[1][0]:28} {'; '.join(said)}")
    total = len(UNSW)
    print(f"\nmaker right: OUI only {right[0]}/{total}, OUI + registry {right[1]}/{total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
