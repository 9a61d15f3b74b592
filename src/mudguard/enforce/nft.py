"""Adapter: apply libnftables JSON batches to the kernel (one batch, one transaction).

Every change goes through ``Nft.apply(commands)``: the commands are wrapped with
the metainfo object and handed to libnftables' ``json_cmd`` exactly once, so the
kernel applies all of them or none (firewalld's ``set_rules``). A failure raises
``NftError`` with nft's message and the batch.

Runs in the calling process's network namespace; tests enter a namespace with
``ip netns exec`` or ``setns`` before constructing it.
"""

from __future__ import annotations

import ctypes
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from mudguard.errors import MudguardError

log = logging.getLogger(__name__)

NftCommand = dict[str, Any]


class NftError(MudguardError):
    """The kernel (through libnftables) refused a batch; nothing of it was applied."""

    key = "nft_failed"

    def __init__(self, rc: int, stderr: str, batch: Sequence[NftCommand]) -> None:
        super().__init__(f"nft refused the batch (rc={rc}): {stderr.strip()}")
        self.rc = rc
        self.stderr = stderr
        self.batch = list(batch)


class Nft:
    """A libnftables handle that applies JSON batches atomically."""

    def __init__(self) -> None:
        import nftables  # pip-nftables: loads Debian's libnftables

        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(True)
        # pip-nftables exposes no dry-run switch; libnftables has one. Bind it on the
        # same shared library and context so ``check_only`` is a real kernel check.
        self._lib = ctypes.CDLL("libnftables.so.1")
        self._lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]

    @classmethod
    def in_namespace(cls, ns: str) -> Nft:
        """A handle bound to network namespace ``ns`` (for tests, the demo, the daemon).

        libnftables opens its netlink socket when the context is created, and a
        socket stays in the namespace it was opened in; so the context is created
        on a short-lived thread that first enters ``ns``, and every later call made
        through it, from any thread, acts on ``ns`` only.
        """
        import threading

        from mudguard.vhome._netns import enter

        box: dict[str, Nft | BaseException] = {}

        def make() -> None:
            try:
                enter(ns)
                box["nft"] = cls()
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=make, name=f"nft-{ns}")
        thread.start()
        thread.join()
        error = box.get("error")
        if isinstance(error, BaseException):
            raise error
        made = box["nft"]
        assert isinstance(made, Nft)
        return made

    def _set_dry_run(self, on: bool) -> None:
        self._lib.nft_ctx_set_dry_run(self._nft._Nftables__ctx, on)

    def apply(self, commands: Sequence[NftCommand], *, check_only: bool = False) -> None:
        """Apply ``commands`` in one transaction; raise ``NftError`` if refused.

        With ``check_only`` the batch is validated by the kernel and not applied.
        """
        if not commands:
            return
        batch = {"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}
        self._set_dry_run(check_only)
        try:
            rc, _output, error = self._nft.json_cmd(batch)
        finally:
            self._set_dry_run(False)
        if rc != 0:
            raise NftError(rc, error, commands)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("applied %d nft commands: %s", len(commands), json.dumps(commands))

    def list_json(self, *what: str) -> list[dict[str, Any]]:
        """Read part of the ruleset back (e.g. ``"table", "inet", "mudguard"``).

        Slow on large rulesets: use only to reconcile after a restart, never on a hot path.
        """
        rc, output, error = self._nft.cmd("list " + " ".join(what))
        if rc != 0:
            raise NftError(rc, error, [])
        data: dict[str, Any] = json.loads(output) if output else {"nftables": []}
        items: list[dict[str, Any]] = data.get("nftables", [])
        return items

    def add_set_elements(self, table: str, set_name: str,
                         elements: Iterable[tuple[str, ...] | str], *,
                         timeout_s: int | None = None, family: str = "inet") -> None:
        """Add elements (concatenations as tuples) to a named set, with an optional timeout."""
        elems: list[Any] = []
        for element in elements:
            value: Any = {"concat": list(element)} if isinstance(element, tuple) else element
            if timeout_s is not None:
                value = {"elem": {"val": value, "timeout": int(timeout_s)}}
            elems.append(value)
        if not elems:
            return
        self.apply([{"add": {"element": {"family": family, "table": table, "name": set_name,
                                          "elem": elems}}}])
