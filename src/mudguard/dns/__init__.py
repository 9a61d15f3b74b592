"""The gateway's DNS guard: answers for allowed names fill nft sets before devices see them.

``core`` is pure (``DnsGuard`` and its commands); ``server`` is the asyncio adapter
(``DnsServer``, ``NftSetFiller``); ``netlink`` puts set elements into the kernel.
Only the core is imported here, so importing the package does no I/O.
"""

from mudguard.devices._model import DnsGrant
from mudguard.dns.core import (
    AddSetElements,
    Command,
    DnsGuard,
    Drop,
    ForwardUpstream,
    GuardConfig,
    SendAnswer,
)

__all__ = [
    "AddSetElements",
    "Command",
    "DnsGrant",
    "DnsGuard",
    "Drop",
    "ForwardUpstream",
    "GuardConfig",
    "SendAnswer",
]
