"""Adapter: apply libnftables JSON batches to the kernel (one batch, one transaction).

Every change goes through ``Nft.apply(commands)``, and the kernel applies all of a
batch or none of it. A batch within ``bytecode.py``'s vocabulary (what a device
update sends: its chains, rules, sets, map entries) is translated there and sent
over ``nfnetlink.py``'s socket, at a cost that does not grow with the ruleset;
anything else (the base table, base chains, verdict-map rules) and every check
goes to libnftables' ``json_cmd``, wrapped with the metainfo object (firewalld's
``set_rules``). A refusal raises ``NftError`` with the kernel's or nft's message
and the batch.

Runs in the calling process's network namespace; tests enter a namespace with
``ip netns exec`` or ``setns`` before constructing it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import queue
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from mudguard.enforce.bytecode import SetLayout, Unsupported, encode_batch
from mudguard.enforce.conntrack import forget_connections
from mudguard.enforce.nfnetlink import Message, NfnetlinkError, NfnetlinkSocket
from mudguard.enforce.readback import (
    RawElement,
    read_pairs,
    read_raw_elements,
    read_rules,
    read_tables,
)
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
    """A libnftables handle (and a netlink socket) that applies JSON batches atomically.

    ``netlink=False`` sends every batch through libnftables (the reference path,
    for comparisons and benchmarks).
    """

    def __init__(self, *, netlink: bool = True) -> None:
        import nftables  # pip-nftables: loads Debian's libnftables

        self._socket = NfnetlinkSocket()  # in this namespace: see in_namespace
        self._netlink = self._socket if netlink else None
        self._lock = threading.Lock()
        # Forgetting connections walks the whole conntrack table in the kernel (≈7 ms per
        # family whatever it holds): it runs behind the update, on its own socket.
        self._ct_socket = NfnetlinkSocket()
        self._ct_queue: queue.Queue[tuple[str, ...]] = queue.Queue(maxsize=4096)
        self._ct_worker: threading.Thread | None = None
        self.netlink_batches = 0  # batches sent over the socket (tests and benches read it)

        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(True)
        # pip-nftables exposes no dry-run switch; libnftables has one. Bind it on the
        # same shared library and context so ``check_only`` is a real kernel check.
        self._lib = ctypes.CDLL("libnftables.so.1")
        self._lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]

    @classmethod
    def in_namespace(cls, ns: str, *, netlink: bool = True) -> Nft:
        """A handle bound to network namespace ``ns`` (for tests, the demo, the daemon).

        libnftables opens its netlink socket when the context is created, and a
        socket stays in the namespace it was opened in; so the context is created
        on a short-lived thread that first enters ``ns``, and every later call made
        through it, from any thread, acts on ``ns`` only.
        """
        from mudguard.vhome._netns import enter

        box: dict[str, Nft | BaseException] = {}

        def make() -> None:
            try:
                enter(ns)
                box["nft"] = cls(netlink=netlink)
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

    def apply(self, commands: Sequence[NftCommand], *, check_only: bool = False,
              set_types: dict[str, SetLayout] | None = None) -> None:
        """Apply ``commands`` in one transaction; raise ``NftError`` if refused.

        With ``check_only`` the batch is validated by the kernel and not applied.
        ``set_types`` lays out sets whose elements need it (``bytecode.SetLayout``).
        """
        if not commands:
            return
        with self._lock:
            if not check_only and self._send_netlink(commands, set_types):
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

    def _send_netlink(self, commands: Sequence[NftCommand],
                      set_types: dict[str, SetLayout] | None = None) -> bool:
        """Send the batch over nfnetlink; False if it is outside the translator's vocabulary."""
        if self._netlink is None:
            return False
        try:
            messages = encode_batch(commands, set_types)
        except Unsupported as why:
            log.debug("batch through libnftables: %s", why)
            return False
        try:
            self._netlink.send_batch(messages)
        except NfnetlinkError as exc:
            culprit = f": {json.dumps(commands[exc.origin])}" if exc.origin >= 0 else ""
            raise NftError(exc.code, f"{exc}{culprit}", commands) from exc
        except OSError as exc:  # the socket failed: callers handle it as a refusal
            raise NftError(exc.errno or -1, f"netlink: {exc}", commands) from exc
        self.netlink_batches += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("applied %d nft commands over netlink", len(commands))
        return True

    def read_tables(self, tables: Collection[str]) -> list[dict[str, Any]]:
        """Chains, rules, maps and plain sets of these ``inet`` tables, as listing items.

        Over nfnetlink when this handle has a socket (milliseconds, where libnftables'
        listing takes seconds on a large home), else through ``list ruleset``.
        """
        with self._lock:
            if self._netlink is not None:
                return read_tables(self._netlink, tables)
        items = []
        for item in self.list_json("ruleset"):
            body = next(iter(item.values()), None)
            if isinstance(body, dict) and body.get("table") in tables:
                items.append(item)
        return items

    def send_messages(self, messages: Sequence[Message]) -> None:
        """Send ready nf_tables messages as one transaction (``NftError`` if refused)."""
        if self._netlink is None:
            raise NftError(-1, "no netlink socket", [])
        with self._lock:
            try:
                self._netlink.send_batch(messages)
            except (NfnetlinkError, OSError) as exc:
                raise NftError(getattr(exc, "code", -1), str(exc), []) from exc
            self.netlink_batches += 1

    def read_elements(self, table: str, names: Collection[str]
                      ) -> dict[str, set[RawElement]]:
        """The raw elements of the sets ``names`` of ``table`` (over nfnetlink)."""
        if self._netlink is None:
            raise NftError(-1, "no netlink socket", [])
        with self._lock:
            return read_raw_elements(self._netlink, table, names)

    def read_rules(self, table: str) -> list[tuple[str, str | None]]:
        """(chain, comment) of every rule of the ``inet`` table ``table`` (over nfnetlink)."""
        if self._netlink is None:
            raise NftError(-1, "no netlink socket", [])
        with self._lock:
            return read_rules(self._netlink, table)

    def read_pairs(self, table: str, names: Collection[str]
                   ) -> dict[str, list[tuple[str, str]]]:
        """The (device address, remote address) elements of the DNS pair sets ``names``
        of the ``inet`` table ``table``, by set name (a missing set reads as empty).

        Over nfnetlink when this handle has a socket, else through libnftables.
        """
        with self._lock:
            if self._netlink is not None:
                return read_pairs(self._netlink, table, names)
        pairs: dict[str, list[tuple[str, str]]] = {}
        for name in names:
            try:
                items = self.list_json("set", "inet", table, name)
            except NftError:
                items = []
            found: list[tuple[str, str]] = []
            for item in items:
                for elem in item.get("set", {}).get("elem", []):
                    value = elem.get("elem", {}).get("val", elem) if isinstance(elem, dict) \
                        else elem
                    parts = value.get("concat") if isinstance(value, dict) else None
                    if isinstance(parts, list) and len(parts) == 2:
                        found.append((str(parts[0]), str(parts[1])))
            pairs[name] = found
        return pairs

    def forget_connections(self, addresses: Iterable[str]) -> None:
        """Have the tracked connections with one of ``addresses`` at either end deleted
        (after a device's access narrowed), on a worker thread, in order; ``settle``
        waits for it. Never raises: the rules are in force already."""
        wanted = tuple(addresses)
        if not wanted:
            return
        with self._lock:
            if self._ct_worker is None:
                self._ct_worker = threading.Thread(target=self._forget_loop, daemon=True,
                                                   name="conntrack-forget")
                self._ct_worker.start()
        try:
            self._ct_queue.put_nowait(wanted)
        except queue.Full:
            log.error("conntrack forget queue full: connections of %s stay", ", ".join(wanted))

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every requested ``forget_connections`` is done; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._ct_queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._ct_queue.unfinished_tasks

    def _forget_loop(self) -> None:
        while True:
            addresses = self._ct_queue.get()
            try:
                count = forget_connections(self._ct_socket, addresses)
                log.debug("forgot %d connections of %s", count, ", ".join(addresses))
            except (OSError, ValueError) as exc:
                log.warning("could not forget tracked connections of %s: %s",
                            ", ".join(addresses), exc)
            finally:
                self._ct_queue.task_done()

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
