"""Automatically generated file.

To update, run python3 -m script.hassfest
"""

HOMEKIT = {
    "BSB002": {
        "always_discover": False,
        "domain": "hue",
    },
    "LIFX A19": {
        "always_discover": True,
        "domain": "lifx",
    },
    "YL*": {
        "always_discover": False,
        "domain": "yeelight",
    },
}

ZEROCONF = {
    "_airplay._tcp.local.": [
        {
            "domain": "apple_tv",
            "properties": {
                "model": "appletv*",
            },
        },
    ],
    "_amzn-alexa._tcp.local.": [
        {
            "domain": "roomba",
            "name": "roomba-*",
        },
    ],
    "_esphomelib._tcp.local.": [
        {
            "domain": "esphome",
        },
    ],
    "_hue._tcp.local.": [
        {
            "domain": "hue",
        },
    ],
}
