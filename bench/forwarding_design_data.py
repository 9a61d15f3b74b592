"""The policy-as-data design (#17) for ``bench_forwarding.py --design data``.

``DataEnforcer`` installs the fixed ruleset then every device's elements in one
transaction (a cold install, as after a reboot); a DNS answer becomes the asking
device's answer elements with an hour's timeout, as the DNS guard adds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mudguard.enforce import Nft
from mudguard.enforce.data import DataEnforcer
from mudguard.policy import DevicePolicy, HomeContext
from mudguard.policy._data import dns_answer_elements, element_commands


@dataclass
class DataDesign:
    """Policy as data: one fixed ruleset, the devices as set and map elements."""

    ns: str
    context: HomeContext
    enforcer: DataEnforcer | None = field(default=None, init=False)

    def install(self, policies: Sequence[DevicePolicy]) -> None:
        """A fresh DataEnforcer installs the home (cold install)."""
        self.enforcer = DataEnforcer(Nft.in_namespace(self.ns), self.context)
        self.enforcer.install_home(policies)

    def dns_answer(self, policy: DevicePolicy, name: str, address: str) -> None:
        """The device's answer elements for ``name`` → ``address``, for an hour."""
        assert self.enforcer is not None, "install first"
        record = self.enforcer.installed[policy.device.mac.lower()]
        found = dns_answer_elements(record, name, policy.device.ipv4[0], address)
        assert found, f"{name} is not a name the device's profile uses"
        self.enforcer.nft.apply(element_commands("add", found, timeout=3600),
                                set_types=self.enforcer._layouts)


def make(ns: str, context: HomeContext) -> DataDesign:
    """The data design's installer for the gateway namespace ``ns``."""
    return DataDesign(ns, context)
