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

Second table: the IoT Sentinel set-up captures' devices (Miettinen et al., ICDCS 2017;
the dataset's ``_iotdevice-mac.txt`` per device, as listed in a public notebook that
reads the dataset), with the kind each product is. This list is NOT held out: it was
read in session 6 before four OUI mappings were written (eQ-3, OSRAM and ASSMANN to
the knowledge's maker names, Delta Electronics as a contract maker); the figure shows
what the MAC alone gives on set-up traffic's devices, where IoT Sentinel's 81.5 % is
measured (its captures themselves are not here: the SmarterCoffee set is, see
``bench_identify.py``).

Run: ``.venv/bin/python bench/bench_identify_macs.py``. Not part of the test suite.
"""

from __future__ import annotations

import dataclasses
import sys

from mudguard.identify.capture import load_knowledge, load_oui_registry
from mudguard.identify.decide import identify
from mudguard.identify.knowledge import KnowledgeBase, OuiRegistry
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

# mac: (device, maker aliases, kind)
IOT_SENTINEL = {
    "00:17:88:24:76:ff": ("Philips Hue bridge", ("philips", "signify"), "hub"),
    "00:1a:22:03:cb:be": ("eQ-3 MAX! Cube gateway", ("eq-3",), "hub"),
    "00:1a:22:05:c4:2e": ("eQ-3 HomeMatic plug", ("eq-3",), "plug"),
    "00:24:e4:24:80:2a": ("Withings scale", ("withings",), "scale"),
    "1c:5f:2b:aa:fd:4e": ("D-Link device (hub or door sensor)", ("d-link",), None),
    "20:f8:5e:ca:91:52": ("Fitbit Aria scale", ("fitbit",), "scale"),
    "3c:49:37:03:17:db": ("ednet camera 1", ("ednet", "assmann"), "camera"),
    "3c:49:37:03:17:f0": ("ednet camera 2", ("ednet", "assmann"), "camera"),
    "50:c7:bf:00:c7:03": ("TP-Link HS110 plug", ("tp-link",), "plug"),
    "50:c7:bf:00:fc:a3": ("TP-Link HS100 plug", ("tp-link",), "plug"),
    "5c:cf:7f:06:d9:02": ("Smarter iKettle 2.0", ("smarter",), "appliance"),
    "5c:cf:7f:07:ae:fb": ("Smarter Coffee", ("smarter",), "appliance"),
    "6c:72:20:c5:17:5a": ("D-Link water sensor", ("d-link",), "sensor"),
    "74:da:38:23:22:7b": ("Edimax SP-2101W plug", ("edimax",), "plug"),
    "74:da:38:4a:76:49": ("Edimax SP-1101W plug", ("edimax",), "plug"),
    "74:da:38:80:79:fc": ("Edimax camera 1", ("edimax",), "camera"),
    "74:da:38:80:7a:08": ("Edimax camera 2", ("edimax",), "camera"),
    "84:18:26:7b:5f:6b": ("OSRAM Lightify gateway", ("osram", "lightify"), "hub"),
    "90:8d:78:a8:e1:43": ("D-Link motion sensor", ("d-link",), "sensor"),
    "90:8d:78:a9:3d:6f": ("D-Link smart plug", ("d-link",), "plug"),
    "90:8d:78:dd:0d:60": ("D-Link siren", ("d-link",), None),
    "94:10:3e:34:0c:b5": ("WeMo switch 1", ("belkin",), "plug"),
    "94:10:3e:35:01:c1": ("WeMo switch 2", ("belkin",), "plug"),
    "94:10:3e:41:c2:05": ("WeMo Insight switch 1", ("belkin",), "plug"),
    "94:10:3e:42:80:69": ("WeMo Insight switch 2", ("belkin",), "plug"),
    "94:10:3e:cd:37:65": ("WeMo Link", ("belkin",), "hub"),
    "ac:cf:23:62:3c:6e": ("ednet gateway", ("ednet", "assmann"), "hub"),
    "b0:c5:54:1c:71:85": ("D-Link day camera", ("d-link",), "camera"),
    "b0:c5:54:25:5b:0e": ("D-Link camera", ("d-link",), "camera"),
}


def sentinel_table(oui: OuiRegistry, kb: KnowledgeBase) -> None:
    """The IoT Sentinel devices: maker and kind from the MAC alone."""
    print(f"\n{'IoT Sentinel device':36} {'maker':28} {'kind':10}")
    maker_right = kind_right = kind_named = kind_scored = 0
    for mac, (label, aliases, truth) in IOT_SENTINEL.items():
        result = identify(mac_bytes(mac), [], kb, oui)
        ok = any(a in (result.manufacturer or "").lower() for a in aliases)
        maker_right += ok
        if truth is not None:
            kind_scored += 1
            kind_named += result.kind not in (None, "iot")
            kind_right += result.kind == truth
        verdict = "-" if truth is None else ("ok" if result.kind == truth else "--")
        print(f"{label:36} {str(result.manufacturer) + (' ok' if ok else ' --'):28} "
              f"{result.kind!s:10} {verdict}")
    print(f"\nIoT Sentinel, MAC only: maker right {maker_right}/{len(IOT_SENTINEL)}; "
          f"kind right {kind_right}/{kind_scored} (a specific kind named for {kind_named})")


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
    sentinel_table(oui, with_registry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
