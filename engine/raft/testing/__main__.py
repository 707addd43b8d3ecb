"""Replay one simulator run: ``python3 -m engine.raft.testing --seed N [--trace]``.

A failing test prints the exact command; ``--trace`` prints every action as
it happens, so the run can be followed step by step up to the failure.
"""

from __future__ import annotations

import argparse
import sys

from engine.raft.testing.profile import SimOptions
from engine.raft.testing.sim import SimulationFailure, Simulator

_FEATURES = ("membership", "snapshots", "crashes", "partitions", "lossy-network", "reads",
             "liveness")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine.raft.testing", description=__doc__)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--voters", type=int, default=3)
    ap.add_argument("--spares", type=int, default=2)
    ap.add_argument("--trace", action="store_true", help="print every action")
    ap.add_argument("--lease-reads", action="store_true", help="LEASE_BASED reads")
    for f in _FEATURES:
        ap.add_argument(f"--no-{f}", action="store_true")
    args = ap.parse_args(argv)
    opts = SimOptions(
        seed=args.seed, steps=args.steps, voters=args.voters, spares=args.spares,
        membership=not args.no_membership, snapshots=not args.no_snapshots,
        crashes=not args.no_crashes, partitions=not args.no_partitions,
        lossy_network=not args.no_lossy_network, reads=not args.no_reads,
        check_liveness=not args.no_liveness, lease_reads=args.lease_reads,
    )
    sim = Simulator(opts)
    sim.verbose = args.trace
    print(f"profile: {sim.profile}")
    try:
        stats = sim.run()
    except SimulationFailure as exc:
        print(f"FAILED\n{exc}", file=sys.stderr)
        return 1
    print(f"ok: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
