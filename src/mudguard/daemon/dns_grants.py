"""The DNS guard's grants kept in the store, so a restart or a reboot does not cut devices.

Theory of operation. A device reaches a name's addresses only once the guard has
answered it (``dns/core.py``), and it keeps using that answer from its own cache for
the answer's TTL without asking again. The kernel's elements survive a restart of the
daemon but not a reboot, and the guard's own record of them (``DnsGuard._granted``:
what a later change of the device's rules re-grants) lives in memory. So the record is
kept in the store (``dns_grants``, migration 9):

- ``GrantJournal.run`` rewrites, every ``period`` seconds, the rows under the device
  addresses whose grants changed (``DnsGuard.take_changed``/``grants_under``); expiries
  on the wall clock; a stop writes the last ones (``flush``). A crash loses at most one
  period of refreshes: those devices ask again when they connect.
- ``GrantJournal.restore`` (at start, after every device's policy is fed to the guard)
  hands the stored, unexpired grants to ``DnsGuard.restore_grants``, which keeps only
  those the current policy gives (device present, address still its own, name still
  allowed: never a quarantined device's), with the time they have left, never more
  than what was left when written (a wall clock set back at boot cannot lengthen one),
  bounded per device. The enforcer then makes the kernel's DNS answers exactly those
  (``GuardedEnforcer.restore_dns``: under the data design every other DNS-answer
  element, a previous run's under rules since changed, is deleted in the same
  transaction), and the store is rewritten to what was restored.

The store, not the kernel, is the record: a process restart finds the kernel's
elements (re-added as they are, stale ones deleted), a reboot finds none (they come
back from the store).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from mudguard.devices._model import DnsGrant
from mudguard.dns.core import AddSetElements, DnsGuard
from mudguard.store import Store

log = logging.getLogger(__name__)

JOURNAL_PERIOD_S = 2.0


class RestoresDns(Protocol):
    """What puts restored grants into the kernel (``GuardedEnforcer.restore_dns``)."""

    def restore_dns(self, commands: Sequence[AddSetElements]) -> None:
        """Make the kernel's DNS answers those of ``commands``."""


class GrantJournal:
    """Keeps ``guard``'s grants in ``store`` and gives them back at start (see the module).

    ``wall`` and ``monotonic`` are the clocks: the store's expiries are wall-clock Unix
    times, the guard's are on the event loop's (monotonic) clock.
    """

    def __init__(self, store: Store, guard: DnsGuard, *, period: float = JOURNAL_PERIOD_S,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.guard = guard
        self.period = period
        self._wall = wall
        self._monotonic = monotonic

    def snapshot(self) -> tuple[set[str], list[DnsGrant]]:
        """The addresses whose grants changed and their grants now, expiries in wall-clock
        time (on the guard's thread: the event loop)."""
        changed = self.guard.take_changed()
        if not changed:
            return set(), []
        now, wall = self._monotonic(), self._wall()
        return changed, [dataclasses.replace(g, expires=wall + (g.expires - now))
                         for g in self.guard.grants_under(changed, now)]

    def write(self, addresses: Collection[str], grants: Sequence[DnsGrant]) -> None:
        """Rewrite the rows under ``addresses`` (any thread); expired rows go too."""
        self.store.save_dns_grants(addresses, grants)
        self.store.prune_dns_grants(self._wall())

    def flush(self) -> None:
        """Write what changed since the last write (on the guard's thread)."""
        addresses, grants = self.snapshot()
        if addresses:
            self.write(addresses, grants)

    async def run(self) -> None:
        """Every ``period``: write what changed (the store is written off the loop)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.period)
            addresses, grants = self.snapshot()
            if not addresses:
                continue
            try:
                await loop.run_in_executor(None, self.write, addresses, grants)
            except Exception:  # the next period tries again with what changed since
                log.exception("could not store the DNS grants")
                self.guard.mark_changed(addresses)

    def restore(self, target: RestoresDns) -> int:
        """Give the guard back the stored grants the current policy still gives, make the
        kernel's DNS answers exactly those (``target``) and the store too; how many.

        Call it once every device's policy is fed to the guard, before it answers."""
        now, wall = self._monotonic(), self._wall()
        stored = [dataclasses.replace(g, expires=now + (g.expires - wall))
                  for g in self.store.list_dns_grants(wall)]
        commands = self.guard.restore_grants(stored, now)
        target.restore_dns(commands)
        kept = self.guard.grants_under({a for c in commands for a, _r in c.elements}, now)
        self.store.replace_dns_grants(
            [dataclasses.replace(g, expires=wall + (g.expires - now)) for g in kept])
        self.guard.take_changed()
        if stored or commands:
            log.info("DNS grants: %d stored, %d restored", len(stored), len(commands))
        return len(commands)
