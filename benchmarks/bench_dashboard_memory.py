"""Figure 6, dashboard memory: the collector's memory stays bounded over a long run.

A child process serves N instances (registered in a SQLite registry in a temp dir), each
with its own real ``/metrics`` endpoint exposing the mesh's own metric families
(``GrpcMetrics``: server series and client series labelled ``caller``/``callee``), whose
counters grow on every scrape as if traffic flowed; every ``--churn`` seconds one instance
is replaced by a new one (new id), as rolling restarts do. This process runs only the
dashboard's collector (registry watches, scrapes every second, history, one open page
draining the SSE hub) and samples its memory: Python allocations (``tracemalloc``) and RSS.

Memory must stop growing once the history window (``--history`` seconds) is full: the goal
is that traced memory grows by at most 10 % (or 1 MiB) from the end of the first window to
the end of the run. ``--seconds 600`` is the ten-minute figure in BENCHMARKS.md; ``make
bench`` runs a short one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _harness import Child, Report, Row, children, command, parser, rss_mb, run, say, stdin_messages

SCRIPT = "bench_dashboard_memory.py"
SERVICES = ("user-service", "order-service", "payment-service", "notification-service")
CALLS = {
    "user-service": ("order-service",),
    "order-service": ("user-service", "payment-service", "notification-service"),
}


# -- the child: N instances with growing metrics ----------------------------------------


async def serve_instances(registry_url: str, count: int, churn: float) -> None:
    from aiohttp import web
    from prometheus_client import CollectorRegistry, generate_latest

    from grpcmesh import ServiceInstance, open_registry
    from grpcmesh.middleware.metrics import GrpcMetrics

    registry = open_registry(registry_url)
    runners: dict[int, web.AppRunner] = {}
    rng = random.Random(7)

    def endpoint(service: str) -> web.Application:
        metrics = GrpcMetrics.of(CollectorRegistry())

        async def handler(_request: web.Request) -> web.Response:
            for _ in range(20):  # traffic since the last scrape
                code = "UNAVAILABLE" if rng.random() < 0.05 else "OK"
                seconds = rng.expovariate(200)
                labels = (f"shop.{service}", "Get", "unary")
                metrics.server_handled.child(*labels, code).inc()
                metrics.server_handling.child(*labels).observe(seconds)
                for callee in CALLS.get(service, ()):
                    edge = (f"shop.{callee}", "Get", "unary", service, callee)
                    metrics.client_handled.child(*edge, code).inc()
                    metrics.client_handling.child(*edge).observe(seconds)
            return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", handler)
        return app

    async def start(index: int, generation: int) -> ServiceInstance:
        service = SERVICES[index % len(SERVICES)]
        runner = web.AppRunner(endpoint(service), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        old = runners.pop(index, None)
        if old is not None:
            await old.cleanup()
        runners[index] = runner
        port = runner.addresses[0][1]
        inst = ServiceInstance(
            name=service,
            id=f"{service}-{index}-g{generation}",
            address="127.0.0.1",
            port=port,
            dependencies=CALLS.get(service, ()),
            metadata={"metrics_url": f"http://127.0.0.1:{port}/metrics"},
        )
        await registry.register(inst, ttl=30)
        return inst

    instances = [await start(i, 0) for i in range(count)]
    say({"ready": True})
    generation = 0
    stop = asyncio.Event()

    async def commands() -> None:
        async for _ in stdin_messages():
            pass
        stop.set()  # stdin closed: the benchmark is over

    reader = asyncio.create_task(commands())
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), churn)
        if stop.is_set():
            break
        generation += 1
        index = generation % count
        await registry.deregister(instances[index])
        instances[index] = await start(index, generation)
    reader.cancel()
    await registry.close()
    for runner in runners.values():
        await runner.cleanup()


# -- the parent: the collector under measurement ----------------------------------------


async def drain(queue: asyncio.Queue[Any]) -> None:
    while await queue.get() is not None:
        pass


async def main(args: argparse.Namespace, report: Report) -> None:
    from grpcmesh.dashboard.collector import MeshCollector
    from grpcmesh.dashboard.hub import Hub
    from grpcmesh.registry import open_registry

    seconds = 12.0 if args.smoke else args.seconds
    history = 4.0 if args.smoke else args.history
    churn = 2.0 if args.smoke else args.churn
    count = 4 if args.smoke else args.instances
    with tempfile.TemporaryDirectory(prefix="grpcmesh-bench-dash-") as tmp:
        url = f"sqlite://{Path(tmp) / 'registry.db'}"
        async with children() as started:
            server = await Child.start("instances", __file__, "--serve", url, str(count), str(churn))
            started.append(server)
            await server.read()
            tracemalloc.start()
            hub = Hub()
            registry = open_registry(url)
            collector = MeshCollector(registry, hub, scrape_interval=1.0, history_seconds=history)
            samples: list[tuple[float, float, float, tuple[int, int, int]]] = []
            with hub.subscribe() as queue:
                page = asyncio.create_task(drain(queue))
                await collector.start()
                began = time.monotonic()
                step = max(1.0, seconds / 60)
                while (elapsed := time.monotonic() - began) < seconds:
                    traced, _ = tracemalloc.get_traced_memory()
                    samples.append((elapsed, traced / 2**20, rss_mb(), collector.history.sizes()))
                    await asyncio.sleep(step)
                state = collector.state()
                await collector.stop()
                page.cancel()
            await registry.close()
            tracemalloc.stop()
    edges = sum(1 for e in state["edges"] if e["observed"])
    filled = [s for s in samples if s[0] >= history] or samples[-1:]
    start_mb, end_mb = filled[0][1], samples[-1][1]
    peak_mb = max(s[1] for s in filled)
    growth = end_mb - start_mb
    met = growth <= max(1.0, 0.10 * start_mb)
    report.line(
        f"### Dashboard memory: {count} instances, {seconds:g} s, history window {history:g} s, churn {churn:g} s"
    )
    report.line()
    report.line(
        f"Collector process, one page open; {edges} observed edges at the end. Traced = Python allocations"
        " (tracemalloc, started before the collector), RSS = the whole process."
    )
    report.line(
        "What may still grow after the window is full is bounded by count, not time: the registry event"
        " log keeps the last 200 events (2 per churn step, so it fills only after 1000 s at --churn 10)."
        " The step from the first sample to the second is the collector starting (modules it imports on"
        " first use, its aiohttp session), not history."
    )
    report.line()
    shown = samples[:: max(1, len(samples) // 12)] + samples[-1:]
    report.table(
        ["t (s)", "traced MiB", "RSS MiB", "services / points+markers / instance histories"],
        [(f"{t:.0f}", f"{m:.2f}", f"{r:.1f}", f"{a} / {b} / {c}") for t, m, r, (a, b, c) in shown],
    )
    report.add(
        Row(
            figure=f"8. dashboard memory, {count} instances over {seconds / 60:g} min",
            goal="traced memory flat once the history window is full (growth <= 10% or 1 MiB)",
            measured=(
                f"{start_mb:.2f} MiB at {filled[0][0]:.0f} s -> {end_mb:.2f} MiB at {samples[-1][0]:.0f} s"
                f" (growth {growth:+.2f} MiB, peak {peak_mb:.2f}); RSS {samples[-1][2]:.0f} MiB"
            ),
            met=met,
            command=command(SCRIPT, *_non_default(args)),
            details={"samples": samples},
        )
    )


DEFAULT_SECONDS = 20.0


def _non_default(args: argparse.Namespace) -> list[str]:
    given = {"seconds": DEFAULT_SECONDS, "history": 60.0, "instances": 20, "churn": 10.0}
    return [
        part
        for name, default in given.items()
        if getattr(args, name) != default
        for part in (f"--{name}", f"{getattr(args, name):g}")
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve_instances(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
        sys.exit(0)
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of the run (600: the full figure)")
    p.add_argument("--history", type=float, default=60.0, help="the collector's history window, seconds")
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--churn", type=float, default=10.0, help="replace one instance every this many seconds")
    run(main, p.parse_args(), SCRIPT)
