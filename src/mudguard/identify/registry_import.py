"""Build ``discovery_registry.json`` from a Home Assistant wheel (a maintainer's tool).

Home Assistant ships, generated from every integration's manifest, the matchers it
uses to recognise devices on a network: ``homeassistant/generated/dhcp.py``
(hostname patterns and MAC prefixes), ``zeroconf.py`` (mDNS service types with
instance-name and TXT matchers; HomeKit models), ``ssdp.py`` (UPnP matchers) and
``integrations.json`` (each integration's display name and brand). This tool reads
those four files out of the wheel, never importing or executing them: the
``.py`` files are parsed with ``ast`` and only the literal value of the top-level
assignment is taken (``ast.literal_eval``). It keeps only what identification
needs and writes a compact JSON with its provenance.

Run: ``scripts/update-discovery-registry`` (downloads the wheel with pip), or
``python -m mudguard.identify.registry_import WHEEL [-o OUT]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GENERATED = "homeassistant/generated/"
FILES = {"dhcp": "dhcp.py", "zeroconf": "zeroconf.py", "ssdp": "ssdp.py",
         "integrations": "integrations.json"}
SOURCE_URL = "https://pypi.org/project/homeassistant/{version}/"
LICENCE = ("Apache-2.0. Derived from Home Assistant's generated discovery matchers "
           "(homeassistant/generated/{dhcp,zeroconf,ssdp}.py, integrations.json), "
           "Copyright Home Assistant contributors, licensed under the Apache License, "
           "Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0). Reduced to the "
           "fields identification uses; the matching semantics follow Home Assistant's.")
# Integrations named after a protocol, a firmware or a software platform, not after
# who made the device: a match names the platform (as knowledge.json's platform_ouis
# do for Wi-Fi module makers), never the manufacturer.
PLATFORMS = {
    "cast": "Google Cast (protocol)", "homekit_controller": "HomeKit (protocol)",
    "homekit": "HomeKit (protocol)", "matter": "Matter (protocol)",
    "thread": "Thread (protocol)", "esphome": "ESPHome (firmware)",
    "tasmota": "Tasmota (firmware)", "wled": "WLED (firmware)",
    "tuya": "Tuya (white-label IoT platform)", "ipp": "IPP (printing protocol)",
    "dlna_dmr": "DLNA (protocol)", "dlna_dms": "DLNA (protocol)", "upnp": "UPnP IGD (protocol)",
    "onvif": "ONVIF (camera protocol)", "openhome": "OpenHome (protocol)",
    "spotify": "Spotify Connect (protocol)", "zha": "Zigbee coordinator (firmware)",
    "zwave_js": "Z-Wave JS (software)", "zwave_me": "Z-Wave.Me (software)",
    "linkplay": "LinkPlay (audio module)", "kodi": "Kodi (software)",
    "plex": "Plex (software)", "forked_daapd": "OwnTone (software)",
    "music_assistant": "Music Assistant (software)", "wyoming": "Wyoming (protocol)",
    "nut": "NUT (software)", "octoprint": "OctoPrint (software)",
    "system_bridge": "System Bridge (software)", "volumio": "Volumio (software)",
    "onewire": "1-Wire (protocol)", "smartthings": "SmartThings (platform)",
    "fully_kiosk": "Fully Kiosk (software)", "squeezebox": "Squeezebox (software)",
    "androidtv_remote": "Android TV (platform)",
}
PATTERN = re.compile(r"^[\x20-\x7e]{1,80}$")
MAX_STARS = 6
ZEROCONF_KEYS = ("name", "properties")
SSDP_KEYS = ("st", "nt", "deviceType", "manufacturer", "modelName", "modelDescription",
             "friendlyName", "manufacturerURL")


class RegistryImportError(ValueError):
    """The wheel does not hold what this tool expects (a moved or reshaped file)."""


def literal_assignment(source: str, name: str) -> Any:
    """The literal value assigned to ``name`` at the top level of Python ``source``,
    read with ``ast.literal_eval`` (nothing is executed)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target: ast.expr = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            continue
        if isinstance(target, ast.Name) and target.id == name:
            return ast.literal_eval(node.value)  # type: ignore[arg-type]
    raise RegistryImportError(f"no top-level assignment to {name}")


def _pattern(value: Any) -> str:
    text = str(value)
    if not PATTERN.match(text) or text.count("*") > MAX_STARS:
        raise RegistryImportError(f"unexpected pattern {text!r}")
    return text


def _mac_prefix(value: Any) -> str:
    text = str(value).upper()
    if not re.fullmatch(r"[0-9A-F]{6,12}\*", text):
        raise RegistryImportError(f"unexpected MAC prefix {text!r}")
    return text[:-1]


def _integrations(raw: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """domain → (display name, brand name or None), brands' members flattened."""
    out: dict[str, tuple[str, str | None]] = {}
    for domain, entry in raw["integration"].items():
        members = entry.get("integrations")
        if isinstance(members, dict):
            for member, sub in members.items():
                out[member] = (str(sub.get("name") or entry["name"]), str(entry["name"]))
        elif "name" in entry:
            out.setdefault(domain, (str(entry["name"]), None))
    return out


def build_registry(texts: Mapping[str, str], version: str) -> dict[str, Any]:
    """The compact registry from the four files' texts (``FILES`` keys)."""
    dhcp = literal_assignment(texts["dhcp"], "DHCP")
    zeroconf = literal_assignment(texts["zeroconf"], "ZEROCONF")
    homekit = literal_assignment(texts["zeroconf"], "HOMEKIT")
    ssdp = literal_assignment(texts["ssdp"], "SSDP")
    names = _integrations(json.loads(texts["integrations"]))
    used: set[str] = set()
    out_dhcp = []
    for matcher in dhcp:
        if "hostname" not in matcher and "macaddress" not in matcher:
            continue  # registered_devices: not a matcher
        entry: dict[str, str] = {"d": str(matcher["domain"])}
        if "hostname" in matcher:
            entry["hostname"] = _pattern(matcher["hostname"]).lower()
        if "macaddress" in matcher:
            entry["mac"] = _mac_prefix(matcher["macaddress"])
        out_dhcp.append(entry)
        used.add(entry["d"])
    out_zeroconf: dict[str, list[dict[str, Any]]] = {}
    for service, matchers in sorted(zeroconf.items()):
        kept = []
        for matcher in matchers:
            item: dict[str, Any] = {"d": str(matcher["domain"])}
            if "name" in matcher:
                item["name"] = _pattern(matcher["name"]).lower()
            if "properties" in matcher:
                item["properties"] = {str(k).lower(): _pattern(v).lower()
                                      for k, v in sorted(matcher["properties"].items())}
            kept.append(item)
            used.add(item["d"])
        out_zeroconf[_service_type(service)] = kept
    out_homekit = {_pattern(model): str(entry["domain"])
                   for model, entry in sorted(homekit.items())}
    used.update(out_homekit.values())
    out_ssdp = []
    for domain, matchers in sorted(ssdp.items()):
        for matcher in matchers:
            kept_ssdp = {k: _pattern(matcher[k]) for k in SSDP_KEYS if k in matcher}
            if kept_ssdp:
                out_ssdp.append({"d": str(domain), **kept_ssdp})
                used.add(str(domain))
    integrations: dict[str, dict[str, str]] = {}
    for domain in sorted(used):
        name, brand = names.get(domain, (domain.replace("_", " ").title(), None))
        info = {"name": name}
        if domain in PLATFORMS:
            info["platform"] = PLATFORMS[domain]
        else:
            info["maker"] = brand or name
        integrations[domain] = info
    return {
        "_about": {
            "source": f"homeassistant {version} wheel, {GENERATED}"
                      "{dhcp.py,zeroconf.py,ssdp.py,integrations.json}",
            "url": SOURCE_URL.format(version=version),
            "version": version,
            "licence": LICENCE,
            "generated_by": "python -m mudguard.identify.registry_import "
                            "(scripts/update-discovery-registry); do not edit by hand",
            "platforms": "integrations with 'platform' name a protocol/firmware, never "
                         "the maker (registry_import.PLATFORMS)",
        },
        "integrations": integrations,
        "dhcp": out_dhcp,
        "zeroconf": out_zeroconf,
        "homekit": out_homekit,
        "ssdp": out_ssdp,
    }


def _service_type(name: str) -> str:
    """``_hap._tcp`` out of ``_hap._tcp.local.`` (the form parse.py gives)."""
    text = name.lower().rstrip(".")
    return text[:-6] if text.endswith(".local") else text


def read_wheel(path: Path) -> tuple[dict[str, str], str]:
    """The four files' texts and the version, out of a homeassistant wheel."""
    match = re.match(r"homeassistant-([0-9][0-9A-Za-z.]*)-", path.name)
    if match is None:
        raise RegistryImportError(f"{path.name} is not a homeassistant wheel name")
    with zipfile.ZipFile(path) as wheel:
        try:
            texts = {key: wheel.read(GENERATED + name).decode("utf-8")
                     for key, name in FILES.items()}
        except KeyError as missing:
            raise RegistryImportError(f"the wheel has no {missing}") from None
    return texts, match.group(1)


def render(registry: Mapping[str, Any]) -> str:
    """The registry as committed: one matcher per line, stable order."""
    lines = ["{"]
    keys = list(registry)
    for index, key in enumerate(keys):
        value = registry[key]
        comma = "," if index < len(keys) - 1 else ""
        if isinstance(value, list):
            body = ",\n".join("    " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f"  {json.dumps(key)}: [\n{body}\n  ]{comma}")
        else:
            items = list(value.items())
            body = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                              for k, v in items)
            lines.append(f"  {json.dumps(key)}: {{\n{body}\n  }}{comma}")
    return "\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: read the wheel, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("-o", "--output", type=Path,
                        default=Path(__file__).with_name("discovery_registry.json"))
    args = parser.parse_args(argv)
    try:
        texts, version = read_wheel(args.wheel)
        text = render(build_registry(texts, version))
    except (OSError, zipfile.BadZipFile, RegistryImportError, SyntaxError, ValueError,
            KeyError) as exc:
        print(f"registry_import: {exc}", file=sys.stderr)
        return 1
    args.output.write_text(text, "utf-8")
    print(f"wrote {args.output} ({len(text.encode()) // 1024} KB, Home Assistant {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
