"""The fail-closed property at scale: zero widenings over 10,000 mutants of the corpus.

Each mutant is a corpus MUD file (RFC 8520 form) after 1-4 random mutations
(``tests/fail_closed.py``: matches added, removed, replaced, sides swapped, unknown
members, controller classes, ports, operators, protocols, networks, actions,
direction-initiated, policies). A mutant the parser refuses allows nothing and is
counted as refused; every other one is compiled and ``--flows`` sampled flows are
judged by the interpreted nftables rules and by the literal oracle
(``tests/mud_oracle.py``). A widening is a flow the rules accept and the file does
not allow; the run fails if there is one.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_fail_closed.py [--mutants N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import CORPUS  # noqa: E402
from tests.fail_closed import check, corpus_documents, mutate  # noqa: E402


def main() -> int:
    """Run the mutants and print the figures; exit 1 on any widening."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=int, default=10_000)
    parser.add_argument("--flows", type=int, default=100, help="flows judged per mutant")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    docs = corpus_documents(CORPUS)
    rng = random.Random(args.seed)
    start = time.perf_counter()
    refused = flows = accepted = widened = 0
    for index in range(args.mutants):
        name, doc = rng.choice(docs)
        outcome = check(mutate(doc, rng, rng.randint(1, 4)), rng, count=args.flows)
        refused += outcome.refused
        flows += outcome.flows
        accepted += outcome.accepted
        if outcome.widenings:
            widened += 1
            print(f"WIDENING in mutant {index} of {name}: {outcome.widenings[0]}", flush=True)
        if (index + 1) % 1000 == 0:
            print(f"{index + 1} mutants, {time.perf_counter() - start:.0f} s", flush=True)
    elapsed = time.perf_counter() - start
    print(f"corpus files: {len(docs)}; mutants: {args.mutants} (seed {args.seed}); "
          f"refused by the parser: {refused}; compiled: {args.mutants - refused}")
    print(f"flows judged: {flows}; accepted by the rules: {accepted}; "
          f"widening mutants: {widened}")
    print(f"time: {elapsed:.1f} s ({elapsed / max(args.mutants, 1) * 1000:.1f} ms per mutant)")
    return 1 if widened else 0


if __name__ == "__main__":
    raise SystemExit(main())
