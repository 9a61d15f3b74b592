"""Automatically generated file.

To update, run python3 -m script.hassfest
"""

SSDP = {
    "denonavr": [
        {
            "deviceType": "urn:schemas-upnp-org:device:MediaRenderer:1",
            "manufacturer": "Denon",
        },
    ],
    "sonos": [
        {
            "st": "urn:schemas-upnp-org:device:ZonePlayer:1",
        },
    ],
}
