"""What checking the source binding before the established fast path costs (#9).

Since session 6 a packet from the LAN meets its sender's source binding before
``ct state established,related accept`` (a device, or an unknown MAC, that knows another
device's connection tuple and sequence numbers can no longer inject into its flows):

* chains (``_nft.py``): the shards accept established traffic at once again, but the
  main table (after them; its drop is final) drops unknown MACs, then any LAN packet
  whose ``MAC . source`` pair is not in ``bind4``/``bind6``, before its own established
  accept;
* data (``_data.py``): the fixed forward chain starts with the ``bind4``/``bind6`` lookup.

Rows, in one run, in one virtual home (one device on the home default, reaching the
fake Internet; ``--others`` more devices installed around it):

* ``none``: no ruleset (first and last: the machine's drift shows);
* ``chains s5``: today's compile rebuilt with the order up to session 5
  (``chains_established_first``: established accepted first in every shard);
* ``chains s6``: today's compile rebuilt with e788e56's order
  (``chains_binding_first_s6``: four rules per shard before a LAN packet's established
  accept in the shards that do not hold its device; checked equal to that compiler's
  output but for the digest comments);
* ``chains now``: today's compile (one rule per shard again, the binding a lookup of
  ``MAC . source`` in the main table's ``bind4``/``bind6``, as the data design does);
* ``data before`` / ``data after``: the data design's compile rebuilt with established
  first (``data_established_first``) / today's.

A design's rows are measured back to back in one round (the order rotating from round
to round), so a shared machine's load cancels out in their ratios: the median of the
rounds' ratios is the figure to trust, best-of rows show the spread. Figures: 64-byte
UDP datagrams per second on an established flow from the device (every one meets the
binding now) and bulk TCP from the device (``--no-bulk``: skipped), best of ``--repeats``.

Run as root: ``.venv/bin/python bench/bench_binding_first.py [--seconds 3] [--repeats 5]
[--others 0] [--designs chains data] [--no-bulk]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench_enforce_update import corpus, policy
from bench_forwarding import ACCEPTOR, CONNECT_PORT, bulk_rate, udp_rate

from mudguard.enforce import Nft
from mudguard.enforce.data import layouts
from mudguard.policy import (
    BIND4,
    BIND6,
    TABLE,
    DeviceFacts,
    HomeContext,
    LifecycleState,
    compile_home,
    decide,
)
from mudguard.policy._data import compile_home_data
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, run

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLOUD4 = INTERNET_HOSTS["cloud"][0]
Command = dict[str, Any]
EST = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                 "right": ["established", "related"]}}
ACCEPT: dict[str, Any] = {"accept": None}


def _rule(cmd: Command) -> dict[str, Any] | None:
    rule: dict[str, Any] | None = cmd.get("add", {}).get("rule")
    return rule


def chains_binding_first_s6(cmds: list[Command], lan: str) -> list[Command]:
    """The chains design's batch as e788e56 compiled it: no ``bind4``/``bind6`` in the
    main table; each shard accepts established traffic at once only from outside the
    LAN, drops invalid packets, dispatches LAN packets to their device's ``out`` chain
    (rate cap, binding, ``established accept``, rules), then accepts established
    traffic from another shard's device."""
    not_lan = {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": lan}}
    out: list[Command] = []
    changed = 0
    for cmd in copy.deepcopy(cmds):
        rule = _rule(cmd)
        element = cmd.get("add", {}).get("element") or cmd.get("add", {}).get("set")
        if element is not None and element["name"] in (BIND4, BIND6) \
                and element["table"] == TABLE:
            continue  # the main table's binding sets
        if rule is None:
            out.append(cmd)
            continue
        table, chain, expr = rule["table"], rule["chain"], rule["expr"]
        if table == TABLE and chain == "forward" and "@bind" in str(expr):
            continue  # the main table's binding rules
        if table != TABLE and chain == "forward" and expr == [EST, ACCEPT]:
            rule["expr"], rule["comment"] = [not_lan, EST, ACCEPT], "replies from the Internet"
            out.append(cmd)
            changed += 1
            continue
        if table != TABLE and chain == "forward" and "vmap" in expr[-1] \
                and expr[-1]["vmap"]["data"] == "@out_dispatch":
            other = copy.deepcopy(cmd)
            other["add"]["rule"]["expr"] = [EST, ACCEPT]
            other["add"]["rule"]["comment"] = "another shard_s device: bound there"
            out += [cmd, other]
            continue
        out.append(cmd)
        if chain.endswith("_out") and rule.get("comment") == "source must be the device own IPv6":
            own = copy.deepcopy(cmd)
            own["add"]["rule"]["expr"] = [EST, ACCEPT]
            own["add"]["rule"]["comment"] = "its own flows, once bound"
            out.append(own)
    assert changed >= 16, "not today's chains batch"
    return out


def chains_established_first(cmds: list[Command], lan: str) -> list[Command]:
    """The chains design's batch with the order up to session 5: every shard accepts
    established traffic first, device ``out`` chains have no established rule, and the
    main table drops unknown MACs only after its established accept."""
    not_lan = {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": lan}}
    out: list[Command] = []
    moved: Command | None = None
    changed = 0
    for cmd in chains_binding_first_s6(cmds, lan):
        rule = _rule(cmd)
        if rule is not None:
            table, chain, expr = rule["table"], rule["chain"], rule["expr"]
            shard_forward = table != TABLE and chain == "forward"
            if shard_forward and expr == [not_lan, EST, ACCEPT]:
                rule["expr"] = [EST, ACCEPT]
                changed += 1
            elif (shard_forward or chain.endswith("_out")) and expr == [EST, ACCEPT]:
                changed += 1
                continue
            elif table == TABLE and chain == "forward" and moved is None:
                moved = cmd  # the unknown-MAC drop: back after "ct state invalid drop"
                continue
            elif (table == TABLE and chain == "forward" and moved is not None
                  and expr[-1] == {"drop": None} and "invalid" in str(expr)):
                out += [cmd, moved]
                continue
        out.append(cmd)
    assert changed > 16 and moved is not None and moved in out, "not today's chains batch"
    return out


def data_established_first(cmds: list[Command]) -> list[Command]:
    """The data design's batch with the order up to session 5: the binding in
    ``from_dev`` (after the new-connection cap), none before the established accept."""
    gates: list[Command] = []
    out: list[Command] = []
    for cmd in copy.deepcopy(cmds):
        rule = _rule(cmd)
        if rule is not None and rule["chain"] == "forward" and any(
                f"@{name}" in str(rule["expr"]) for name in (BIND4, BIND6)):
            rule["chain"], rule["expr"] = "from_dev", rule["expr"][1:]  # without iifname
            gates.append(cmd)
            continue
        out.append(cmd)
        if rule is not None and rule.get("comment") == "new-connection rate cap" \
                and rule["chain"] == "from_dev":
            out += gates  # the forward rules come first in the batch
    assert len(gates) == 2 and gates[0] in out, "not today's data batch"
    return out


GROUPS: dict[str, tuple[str, ...]] = {
    "chains": ("chains s5", "chains s6", "chains now"),
    "data": ("data before", "data after"),
}
"""Each design's rows, baseline first: ratios are against it and the current session 6
row (chains: ``s5`` established first, ``s6`` e788e56's binding first with four rules
per shard, ``now`` the out-dispatch first)."""


def batches(policies: Sequence[Any], context: HomeContext
            ) -> dict[str, tuple[list[Command], bool]]:
    """Each row's batch (and whether it needs the data design's set layouts)."""
    chains = compile_home(policies, context)
    data = compile_home_data(policies, context).commands()
    lan = context.lan_interface
    return {"chains s5": (chains_established_first(chains, lan), False),
            "chains s6": (chains_binding_first_s6(chains, lan), False),
            "chains now": (chains, False),
            "data before": (data_established_first(data), True),
            "data after": (data, True)}


def _rotated(labels: tuple[str, ...], k: int) -> tuple[str, ...]:
    return labels[k % len(labels):] + labels[:k % len(labels)]


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--others", type=int, default=0)
    parser.add_argument("--designs", nargs="+", choices=sorted(GROUPS), default=sorted(GROUPS))
    parser.add_argument("--no-bulk", action="store_true", help="64-byte UDP only (faster)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    files = corpus()
    with VirtualHome(prefix=f"mgbf{os.getpid() % 1000}", devices=1) as home:
        acceptor = subprocess.Popen(["ip", "netns", "exec", home.inet_ns, sys.executable,
                                     "-c", ACCEPTOR], stdout=subprocess.PIPE, text=True)
        home._procs.append(acceptor)  # stopped with the home
        assert acceptor.stdout is not None and acceptor.stdout.readline().strip() == "ready"
        node = home.nodes[0]
        context = home.context()
        me = DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                         state=LifecycleState.DEFAULT)
        policies = [decide(me, None, (), context, now=NOW),
                    *(policy(i, files[i % len(files)]) for i in range(1, 1 + args.others))]
        rows = batches(policies, context)
        nft = Nft.in_namespace(home.gw_ns)
        sets = layouts()

        def install(label: str) -> None:
            run(["nft", "flush", "ruleset"], ns=home.gw_ns)
            if label != "none":
                cmds, data = rows[label]
                nft.apply(cmds, set_types=sets if data else None)
            run(["conntrack", "-F"], ns=home.gw_ns, check=False)
            assert home.tcp(node.ns, CLOUD4, CONNECT_PORT), f"{label}: the flow is refused"

        def once(label: str) -> tuple[float, float]:
            install(label)
            bulk = 1.0 if args.no_bulk else bulk_rate(home, node.ns, args.seconds, 1)
            return udp_rate(home, node.ns, args.seconds, 1), bulk

        best: dict[str, tuple[float, float]] = {}
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {d: [] for d in args.designs}

        def keep(label: str) -> tuple[float, float]:
            got = once(label)
            old = best.get(label, (0.0, 0.0))
            best[label] = (max(old[0], got[0]), max(old[1], got[1]))
            return got

        first_none = once("none")
        for k in range(args.repeats):
            for design in args.designs:
                runs[design].append({label: keep(label)
                                     for label in _rotated(GROUPS[design], k)})
        last_none = once("none")
    base = (max(first_none[0], last_none[0]), max(first_none[1], last_none[1]))
    print(f"one device (home default) to the fake Internet, {args.others} more installed; "
          f"best of {args.repeats} rotated runs; none = no ruleset "
          f"(first {first_none[0]:.0f}/s, last {last_none[0]:.0f}/s)")
    print(f"{'ruleset':>14} {'64B UDP/s':>10} {'vs none':>8} {'bulk Gb/s':>10} {'vs none':>8}")
    for label, (udp, bulk) in [("none", base), *best.items()]:
        print(f"{label:>14} {udp:>10.0f} {udp / base[0]:>7.2f}x {bulk / 1e9:>10.2f} "
              f"{bulk / base[1]:>7.2f}x")
    for design in args.designs:
        labels = GROUPS[design]
        for ref in labels[:-1]:
            for label in labels[labels.index(ref) + 1:]:
                _ratio_line(label, ref, best, runs[design])


def _ratio_line(label: str, ref: str, best: dict[str, tuple[float, float]],
                runs: list[dict[str, tuple[float, float]]]) -> None:
    udp = statistics.median(r[label][0] / r[ref][0] for r in runs)
    bulk = statistics.median(r[label][1] / r[ref][1] for r in runs)
    print(f"{label} vs {ref}: best 64B UDP {best[label][0] / best[ref][0]:.3f}x, bulk "
          f"{best[label][1] / best[ref][1]:.3f}x; median of {len(runs)} back-to-back rounds: "
          f"64B UDP {udp:.3f}x, bulk {bulk:.3f}x")


if __name__ == "__main__":
    main()
