"""Automatically generated file.

To update, run python3 -m script.hassfest
"""

from __future__ import annotations

from typing import Final

raise RuntimeError("this file must be parsed, never executed")

DHCP: Final[list[dict[str, str | bool]]] = [
    {
        "domain": "esphome",
        "registered_devices": True,
    },
    {
        "domain": "lifx",
        "macaddress": "D073D5*",
    },
    {
        "domain": "ring",
        "hostname": "ring*",
        "macaddress": "0CAE7D*",
    },
    {
        "domain": "tplink",
        "hostname": "k[lps]*",
        "macaddress": "5091E3*",
    },
    {
        "domain": "flux_led",
        "hostname": "zengge_[0-9a-f][0-9a-f]_*",
    },
]
