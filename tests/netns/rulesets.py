"""Which enforcer the netns tests build: ``MUDGUARD_TEST_RULESET=data`` runs them on
policy as data (``DataGatewayEnforcer``, DNS answers through ``DataSetFiller``), else the
chains ``Enforcer``."""

from __future__ import annotations

import os
from typing import Any

from mudguard.dns.core import AddSetElements
from mudguard.enforce import Enforcer, Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer, DataSetFiller
from mudguard.policy import TABLE, HomeContext, dns_set_name, shard_table

TEST_RULESET = os.environ.get("MUDGUARD_TEST_RULESET", "")


def make_enforcer(nft: Nft, context: HomeContext, **kw: Any) -> Any:
    """The enforcer of the design under test (same keywords as ``Enforcer``)."""
    if TEST_RULESET == "data":
        return DataGatewayEnforcer(nft, context, **kw)
    return Enforcer(nft, context, **kw)


def fill_answer(enforcer: Any, nft: Nft, name: str, mac: str, local: str, remote: str,
                timeout_s: int = 60) -> None:
    """What the DNS guard does for one answer: (device address, answer address) for
    ``name``, in the chains design's per-name set or as the data design's elements."""
    family = 6 if ":" in remote else 4
    if isinstance(enforcer, DataGatewayEnforcer):
        DataSetFiller(enforcer.record_of, nft).fill([AddSetElements(
            0, dns_set_name(name, family), family, ((local, remote),), timeout_s, TABLE,
            name)])
        return
    nft.add_set_elements(shard_table(mac), dns_set_name(name, family), [(local, remote)],
                         timeout_s=timeout_s)
