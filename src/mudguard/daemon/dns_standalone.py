"""``mudguard dns serve --config``: the DNS guard on its own, for the home the daemon runs.

Theory of operation. ``mudguard run`` serves DNS itself; this runs the same guard as a
process of its own, from the daemon's configuration and database: every stored device's
policy is decided as a start decides it (``gateway.home_policies``), fed to the guard,
and re-read every ``refresh`` seconds (devices joining, quarantines, leases moving).
Answers are filled the way ``[gateway] ruleset`` says, like the daemon: under ``data``
each (device address, answer) becomes the elements of that device's DNS templates
(``DataSetFiller`` over the records compiled here from the same policies), under
``chains`` the per-name sets of the device's shard (``NftSetFiller``). The grants go to
the store (``GrantJournal``), so the daemon's next start restores them. The daemon
owns the rules: this process never deletes an element (a device whose rules change
has its answers deleted by the daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import signal
from collections.abc import Callable, Sequence

from mudguard.daemon.config import GatewayConfig
from mudguard.daemon.dns_grants import GrantJournal
from mudguard.daemon.gateway import home_policies
from mudguard.devices.service import DeviceService
from mudguard.dns.core import AddSetElements, DnsGuard, GuardConfig
from mudguard.dns.server import DnsServer, NftSetFiller, SetFiller, Upstream
from mudguard.policy import DevicePolicy
from mudguard.policy._data import DeviceElements, device_elements
from mudguard.policy._model import PeerIndex
from mudguard.store import Store

log = logging.getLogger(__name__)

REFRESH_S = 5.0


class _KernelUntouched:
    """The restored grants stay as the kernel holds them: the daemon restores them."""

    def restore_dns(self, commands: Sequence[AddSetElements]) -> None:
        del commands


class StandaloneDns:
    """The guard, its filler and its policies for ``config``'s home (see the module).

    Args:
        config: the daemon's configuration (addresses, upstream, ruleset, database).
        store: the daemon's database.
        filler: puts elements into the kernel; by default the one ``config.ruleset``
            needs.
    """

    def __init__(self, config: GatewayConfig, store: Store,
                 filler: SetFiller | None = None) -> None:
        self.config = config
        self.context = config.home_context()
        self.service = DeviceService(store=store, lan_prefixes=config.lan_prefixes,
                                     gateway_ips=config.addresses)
        self.guard = DnsGuard(GuardConfig(lan_prefixes=config.lan_prefixes,
                                          gateway_addresses=config.addresses))
        self.journal = GrantJournal(store, self.guard)
        self._records: dict[str, DeviceElements] = {}
        self._fed: dict[str, DevicePolicy] = {}
        if filler is None:
            if config.ruleset == "data":
                from mudguard.enforce.data_gateway import DataSetFiller

                filler = DataSetFiller(self.record_of)
            else:
                filler = NftSetFiller()
        self.filler = filler

    def record_of(self, address: str) -> DeviceElements | None:
        """The compiled record of the device holding ``address`` (policy as data)."""
        try:
            return self._records.get(str(ipaddress.ip_address(address)))
        except ValueError:
            return None

    def refresh(self) -> int:
        """Decide every stored device's policy again and feed the changed ones to the
        guard (a device gone is forgotten); how many changed."""
        _devices, policies = home_policies(self.service, self.context)
        facts = tuple(p.device for p in policies)
        context = dataclasses.replace(self.context, devices=facts, peers=PeerIndex.of(facts))
        wanted = {p.device.mac.lower(): p for p in policies}
        for mac in set(self._fed) - set(wanted):
            self.guard.remove_device(mac)
            del self._fed[mac]
        changed = 0
        for mac, policy in wanted.items():
            if self._fed.get(mac) == policy:
                continue
            changed += 1
            try:
                self.guard.before_update(mac, (*policy.device.ipv4, *policy.device.ipv6))
                self.guard.apply_policy(policy)
            except ValueError as exc:
                log.warning("DNS guard: %s: %s", mac, exc)
                continue
            self._fed[mac] = policy
        if self.config.ruleset == "data":
            records = [device_elements(p, context) for p in policies]
            self._records = {a: r for r in records for a in (*r.ipv4, *r.ipv6)}
        return changed

    async def serve(self, *, port: int | None = None, lifetime: float = 3600.0,
                    ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT or ``lifetime`` seconds; ``ready()`` once bound."""
        if not self.config.dns_upstream:
            raise ValueError("[dns] upstream is empty: no resolver to forward to")
        self.refresh()
        self.journal.restore(_KernelUntouched())
        server = DnsServer(self.guard, listen=self.config.addresses,
                           upstream=Upstream(self.config.dns_upstream[0]),
                           filler=self.filler,
                           port=self.config.dns_port if port is None else port)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(self.journal.run()),
                 asyncio.create_task(self._refresh_every(REFRESH_S))]
        if ready is not None:
            ready()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), lifetime)
        finally:
            for task in tasks:
                task.cancel()
            await server.stop()
            self.journal.flush()
            log.info("stopped: %s", self.guard.counters)

    async def _refresh_every(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                self.refresh()  # on the loop: the guard's only thread
            except Exception:
                log.exception("re-reading the devices failed; the last ones stay")
