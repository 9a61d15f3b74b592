"""What checking the source binding before the established fast path costs (#9).

Since session 6 a packet from the LAN meets its sender's source binding before
``ct state established,related accept`` (a device, or an unknown MAC, that knows another
device's connection tuple and sequence numbers can no longer inject into its flows):

* chains (``_nft.py``): each shard accepts established traffic at once only from outside
  the LAN; from the LAN its device's ``out`` chain binds the source, then accepts; the
  main table drops unknown MACs first;
* data (``_data.py``): the fixed forward chain starts with the ``bind4``/``bind6`` lookup.

Rows, in one run, in one virtual home (one device on the home default, reaching the
fake Internet; ``--others`` more devices installed around it):

* ``none``: no ruleset (first and last: the machine's drift shows);
* ``<design> before``: today's compile rebuilt with the order up to session 5
  (``established_first``: established accepted before the binding);
* ``<design> after``: today's compile.

"before" and "after" are measured back to back (order alternating), so a shared
machine's load cancels out in their ratio: the median of the pairs' ratios is the figure
to trust, best-of rows show the spread. Figures: 64-byte UDP datagrams per second on
an established flow from the device (every one meets the binding now) and bulk TCP from
the device, best of ``--repeats``.

Run as root: ``.venv/bin/python bench/bench_binding_first.py [--seconds 3] [--repeats 5]
[--others 0]``.
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
from mudguard.policy import TABLE, DeviceFacts, HomeContext, LifecycleState, compile_home, decide
from mudguard.policy._data import BIND4, BIND6, compile_home_data
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


def chains_established_first(cmds: list[Command], lan: str) -> list[Command]:
    """The chains design's batch with the order up to session 5: every shard accepts
    established traffic first, device ``out`` chains have no established rule, and the
    main table drops unknown MACs only after its established accept."""
    not_lan = {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": lan}}
    out: list[Command] = []
    moved: Command | None = None
    changed = 0
    for cmd in copy.deepcopy(cmds):
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


def batches(policies: Sequence[Any], context: HomeContext
            ) -> dict[str, tuple[list[Command], bool]]:
    """Each row's batch (and whether it needs the data design's set layouts)."""
    chains = compile_home(policies, context)
    data = compile_home_data(policies, context).commands()
    return {"chains before": (chains_established_first(chains, context.lan_interface), False),
            "chains after": (chains, False),
            "data before": (data_established_first(data), True),
            "data after": (data, True)}


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--others", type=int, default=0)
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
            return (udp_rate(home, node.ns, args.seconds, 1),
                    bulk_rate(home, node.ns, args.seconds, 1))

        best: dict[str, tuple[float, float]] = {}
        pairs: dict[str, list[tuple[float, float]]] = {"chains": [], "data": []}

        def keep(label: str) -> tuple[float, float]:
            got = once(label)
            old = best.get(label, (0.0, 0.0))
            best[label] = (max(old[0], got[0]), max(old[1], got[1]))
            return got

        first_none = once("none")
        for k in range(args.repeats):
            for design in ("chains", "data"):
                pair = ("before", "after") if k % 2 == 0 else ("after", "before")
                got = {variant: keep(f"{design} {variant}") for variant in pair}
                pairs[design].append((got["after"][0] / got["before"][0],
                                      got["after"][1] / got["before"][1]))
        last_none = once("none")
    base = (max(first_none[0], last_none[0]), max(first_none[1], last_none[1]))
    print(f"one device (home default) to the fake Internet, {args.others} more installed; "
          f"best of {args.repeats} alternating runs; none = no ruleset "
          f"(first {first_none[0]:.0f}/s, last {last_none[0]:.0f}/s)")
    print(f"{'ruleset':>14} {'64B UDP/s':>10} {'vs none':>8} {'bulk Gb/s':>10} {'vs none':>8}")
    for label, (udp, bulk) in [("none", base), *best.items()]:
        print(f"{label:>14} {udp:>10.0f} {udp / base[0]:>7.2f}x {bulk / 1e9:>10.2f} "
              f"{bulk / base[1]:>7.2f}x")
    for design in ("chains", "data"):
        before, after = best[f"{design} before"], best[f"{design} after"]
        udp = statistics.median(r[0] for r in pairs[design])
        bulk = statistics.median(r[1] for r in pairs[design])
        print(f"{design}: binding first vs established first: best 64B UDP "
              f"{after[0] / before[0]:.3f}x, bulk {after[1] / before[1]:.3f}x; median of "
              f"{len(pairs[design])} back-to-back pairs: 64B UDP {udp:.3f}x, bulk {bulk:.3f}x")


if __name__ == "__main__":
    main()
