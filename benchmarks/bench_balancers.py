"""Figure 5, balancer pick cost: microseconds per pick for each policy at 10/100/1,000 endpoints.

Each policy picks as the channel uses it: ``pick`` then ``call_started``/``call_finished``
(p2c needs that feedback; the others ignore it), with a request key for consistent hash.
The baseline, timed in the same interleaved rounds, is the original Go design's ``ServiceLoadBalancer.Next``
(an index modulo the endpoint list), so the ratio shows what each policy adds to the cheapest
possible pick. Weights vary (1..10 x 100) so weighted round robin has work to do.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

from _harness import Report, Row, command, median, parser, run

from grpcmesh import ServiceInstance
from grpcmesh.discovery import POLICIES, Endpoint, make_balancer

SCRIPT = "bench_balancers.py"
MAX_GROWTH = 3.0


def endpoints(n: int) -> list[Endpoint]:
    rng = random.Random(n)
    return [
        Endpoint.from_instance(
            ServiceInstance(
                name="pick-svc",
                id=f"ep-{k:05d}",
                address="127.0.0.1",
                port=20000 + k,
                weight=100 * rng.randint(1, 10),
            )
        )
        for k in range(n)
    ]


def index_modulo_round_robin(eps: Sequence[Endpoint]) -> Callable[[int], object]:
    """The original Go design's ``ServiceLoadBalancer.Next``: an atomic counter modulo the list."""
    state = [0]

    def pick(i: int) -> object:
        state[0] += 1
        return eps[state[0] % len(eps)]

    return pick


def policy_picker(name: str, eps: Sequence[Endpoint], keys: Sequence[str]) -> Callable[[int], object]:
    balancer = make_balancer(name)
    balancer.update(eps)
    needs_key = name == "consistent_hash"

    def pick(i: int) -> object:
        endpoint = balancer.pick(keys[i % len(keys)] if needs_key else None)
        assert endpoint is not None
        balancer.call_started(endpoint)
        balancer.call_finished(endpoint, 0.001, True)
        return endpoint

    return pick


def time_picks(picker: Callable[[int], object], picks: int) -> float:
    started = time.perf_counter()
    for i in range(picks):
        picker(i)
    return (time.perf_counter() - started) / picks * 1e6


def ratio(results: dict[tuple[str, int], list[float]], name: str, base: str, n: int) -> float:
    return median(results[(name, n)]) / median(results[(base, n)])


async def main(args: argparse.Namespace, report: Report) -> None:
    sizes = [10, 100] if args.smoke else [int(s) for s in args.sizes.split(",")]
    picks = 200 if args.smoke else args.picks
    rounds = 2 if args.smoke else args.rounds
    policies = sorted(POLICIES)
    keys = [f"user-{k}" for k in range(997)]
    results: dict[tuple[str, int], list[float]] = {}
    for n in sizes:
        eps = endpoints(n)
        pickers = {"index modulo (baseline)": index_modulo_round_robin(eps)} | {
            p: policy_picker(p, eps, keys) for p in policies
        }
        for picker in pickers.values():
            time_picks(picker, picks // 10 + 1)  # warm up
        rng = random.Random(n)
        for _ in range(rounds):
            order = list(pickers)
            rng.shuffle(order)
            for name in order:
                results.setdefault((name, n), []).append(time_picks(pickers[name], picks))

    names = ["index modulo (baseline)", *policies]
    report.line(f"### Balancer pick cost: µs per pick (median of {rounds} interleaved rounds of {picks} picks)")
    report.line()
    report.line("Each pick includes the `call_started`/`call_finished` feedback the channel gives the policy.")
    report.line()
    report.table(
        ["policy", *[f"{n} endpoints" for n in sizes]],
        [
            [
                name,
                *[
                    f"{median(results[(name, n)]):.2f} µs"
                    + ("" if name == names[0] else f" ({ratio(results, name, names[0], n):.0f}x)")
                    for n in sizes
                ],
            ]
            for name in names
        ],
    )
    for name in policies:
        values = [median(results[(name, n)]) for n in sizes]
        report.add(
            Row(
                figure=f"5. pick cost, {name} at {'/'.join(str(n) for n in sizes)} endpoints",
                goal=f"no number in the issue; O(1)/O(log n): at most {MAX_GROWTH:.0f}x from {sizes[0]} to {sizes[-1]}",
                measured=" / ".join(f"{v:.2f} µs" for v in values)
                + f" ({values[-1] / values[0]:.1f}x; index modulo {median(results[(names[0], sizes[-1])]):.2f} µs)",
                met=values[-1] / values[0] <= MAX_GROWTH,
                command=command(SCRIPT),
                details={"us_per_pick": dict(zip(sizes, values, strict=True))},
            )
        )


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000")
    p.add_argument("--picks", type=int, default=20000, help="picks per round")
    p.add_argument("--rounds", type=int, default=7)
    run(main, p.parse_args(), SCRIPT)
