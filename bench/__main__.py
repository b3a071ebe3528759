"""`python -m bench`: measure syncgate against its ceilings and the peer; print one table."""

from __future__ import annotations

import argparse
import asyncio

from bench.load import wrk_available
from bench.profile import run_profile
from bench.profile import table as profile_table
from bench.runner import Plan, node_peer_installed, peer_installed, print_report, run
from bench.scale import ScalePlan, median_rows, report, run_scale
from bench.systems import node_peer_missing


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 round, c=16, 2 s")
    parser.add_argument("--concurrency", type=_ints, default=(1, 16, 64, 256))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=_ints, default=(1, 2), help="gateway process counts")
    parser.add_argument("--prefetch", type=int, default=64, help="the consumers' prefetch")
    parser.add_argument("--no-peer", action="store_true", help="leave out FastAPI + FastStream")
    parser.add_argument("--no-node-peer", action="store_true",
                        help="leave out the Node.js peer (Fastify + amqplib)")  # fmt: skip
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="only a memory soak: moderate load, gateway RSS sampled")  # fmt: skip
    parser.add_argument("--scale", action="store_true",
                        help="only the scale-out setups: SQLite+memory, PostgreSQL+Redis, "
                        "2 gateways + 2 consumers on the cluster (bench/scale.py)")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="only a profile at one concurrency: py-spy on syncgate, "
                        "--cpu-prof on the Node.js peer (bench/profile.py)")  # fmt: skip
    args = parser.parse_args()
    if args.loadgen == "wrk" and not wrk_available():
        parser.error("wrk is not installed (apt-get install wrk)")
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and wrk_available())
    if args.scale:
        scale_plan = ScalePlan(
            concurrency=16
            if args.quick
            else 64
            if 64 in args.concurrency
            else max(args.concurrency),
            duration=2.0 if args.quick else args.duration,
            rounds=1 if args.quick else args.rounds,
            use_wrk=use_wrk,
        )
        medians = median_rows(asyncio.run(run_scale(scale_plan)))
        print()
        print(f"medians of {scale_plan.rounds} round(s), {scale_plan.duration:g}s at "
              f"c={scale_plan.concurrency}:")  # fmt: skip
        for line in report(medians):
            print(line)
        return
    if args.profile:
        concurrency = 16 if args.quick else 64 if 64 in args.concurrency else max(args.concurrency)
        breakdowns = asyncio.run(
            run_profile(
                concurrency=concurrency,
                duration=2.0 if args.quick else args.duration,
                use_wrk=use_wrk,
                prefetch=args.prefetch,
                node_peer=not args.no_node_peer,
            )
        )
        print()
        print(f"CPU per accepted request by layer at c={concurrency} (py-spy / --cpu-prof shares "
              "of the process's psutil CPU):")  # fmt: skip
        for line in profile_table(breakdowns):
            print(line)
        return
    peer = not args.no_peer and peer_installed()
    if not args.no_peer and not peer:
        print("[bench] the peer is left out: install the bench extra (pip install -e '.[bench]')")
    node_peer = not args.no_node_peer and node_peer_installed()
    if not args.no_node_peer and not node_peer:
        print(f"[bench] the node peer is left out: {node_peer_missing()}")
    plan = Plan(
        concurrencies=(16,) if args.quick else args.concurrency,
        duration=2.0 if args.quick else args.duration,
        rounds=1 if args.quick else args.rounds,
        workers=(1,) if args.quick else args.workers,
        prefetch=args.prefetch,
        peer=peer,
        node_peer=node_peer,
        use_wrk=use_wrk,
        soak=args.soak,
    )
    rows = asyncio.run(run(plan))
    if rows:
        print_report(rows, plan)


if __name__ == "__main__":
    main()
