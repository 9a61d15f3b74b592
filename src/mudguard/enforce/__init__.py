"""Enforcement adapters: apply compiled nftables batches and keep them true.

``Nft`` applies libnftables JSON batches atomically (device batches straight over
nfnetlink); ``Enforcer`` keeps the ``inet mudguard`` tables (main and device shards)
equal to the home's device policies; ``LanIsolation`` makes LAN-to-LAN traffic cross
the gateway (bridge port isolation, proxy ARP/ND).
"""

from mudguard.enforce.enforcer import DeviceLike, Enforcer, ReconcileReport, facts_of
from mudguard.enforce.lan import LanIsolation, LanIsolationError, LanPortWatcher
from mudguard.enforce.nft import Nft, NftError

__all__ = ["DeviceLike", "Enforcer", "LanIsolation", "LanIsolationError",
           "LanPortWatcher", "Nft", "NftError",
           "ReconcileReport", "facts_of"]
