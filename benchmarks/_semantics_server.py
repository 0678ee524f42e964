"""An Echo ``MeshServer`` in its own process for the call-semantics benchmarks.

Each Unary call: with ``--fail-percent`` it fails that share of calls with UNAVAILABLE;
otherwise it burns ``--work-ms`` of CPU on the event loop (a server with a real capacity),
then awaits ``--await-ms`` (I/O), then ``--delay-ms`` (a slow instance). ``--shedding``
turns adaptive load shedding on (``--shedding-policy`` JSON overrides its fields);
``--max-concurrent`` sets grpc.aio's own ``maximum_concurrent_rpcs`` cap; with ``--stats`` it
records, for each Unary call its handler ran, how long the call had waited before the handler
started (from the mesh timeout header) and how long the handler took, and answers a
``{"stats": true}`` line on stdin with them (then starts afresh); its replies then carry the
wall-clock times the handler started and ended, for the client's breakdown. Registers in
``--registry`` with ``--ttl``; prints one JSON line ``{"port": N, "id": ..., "pid": ...}``
once it serves; binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time

import grpc
from _harness import ROOT, say, stdin_messages  # noqa: F401 - ROOT puts src/ on sys.path

from grpcmesh import Mesh
from grpcmesh.config.models import LoggingConfig, MeshConfig
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.server import MeshServer
from grpcmesh.server.admission import queueing_delay
from grpcmesh.server.shedding import SheddingPolicy
from grpcmesh.testing import EchoServicer


class BenchEcho(EchoServicer):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.instance_id)
        self.args = args
        self.waited: list[float] = []
        self.served: list[float] = []

    async def Unary(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> echo_pb2.EchoReply:  # type: ignore[type-arg]
        args = self.args
        if args.stats:
            began, wall = time.monotonic(), time.time()
            waited = queueing_delay(context.invocation_metadata(), context.time_remaining())
            try:
                reply = await self._unary(request, context)
            finally:
                self.served.append(time.monotonic() - began)
                if waited is not None:
                    self.waited.append(waited)
            reply.message = f"{wall:.6f} {time.time():.6f}"  # when the handler ran, for the client's breakdown
            return reply
        return await self._unary(request, context)

    async def _unary(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> echo_pb2.EchoReply:  # type: ignore[type-arg]
        args = self.args
        if args.fail_percent and random.random() * 100 < args.fail_percent:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")
        if args.work_ms:
            end = time.perf_counter() + args.work_ms / 1000
            while time.perf_counter() < end:
                pass
        if args.await_ms:
            await asyncio.sleep(args.await_ms / 1000)
        if args.delay_ms:
            await asyncio.sleep(args.delay_ms / 1000)
        return echo_pb2.EchoReply(message=request.message, instance_id=self.instance_id)


async def main(args: argparse.Namespace) -> None:
    quiet = MeshConfig(logging=LoggingConfig(enabled=False))  # no access log on the benchmark's stdout
    async with Mesh(args.registry, config=quiet) as mesh:
        shedding = SheddingPolicy(enabled=True, **json.loads(args.shedding_policy)) if args.shedding else None
        server = mesh.server(
            args.name,
            version="v1",
            port=0,
            host="127.0.0.1",
            instance_id=args.instance_id,
            ttl=args.ttl,
            shutdown_grace=2.0,
            propagation_delay=0.1,
            reflection=False,
            shedding=shedding,
            maximum_concurrent_rpcs=args.max_concurrent,
            options=[(k, int(v)) for k, v in (o.split("=", 1) for o in args.option)],
        )
        servicer = BenchEcho(args)
        echo_pb2_grpc.add_EchoServicer_to_server(servicer, server.grpc)
        await server.start()
        print(json.dumps({"port": server.port, "id": args.instance_id, "pid": os.getpid()}), flush=True)
        if args.stats:
            answering = asyncio.get_running_loop().create_task(answer_stats(servicer, server))
        await server.serve()
        if args.stats:
            answering.cancel()


async def answer_stats(servicer: BenchEcho, server: MeshServer) -> None:
    """Answer each ``{"stats": true}`` on stdin with what the handlers saw since the last one."""
    async for _ in stdin_messages():
        waited, served = servicer.waited, servicer.served
        servicer.waited, servicer.served = [], []
        say(
            {
                "stats": {
                    "waited": waited,
                    "served": served,
                    "shed": server.shedder.shed,
                    "limit": server.shedder.limit(),
                }
            }
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registry", required=True)
    p.add_argument("--name", default="echo")
    p.add_argument("--instance-id", default="echo-0")
    p.add_argument("--ttl", type=float, default=30.0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--await-ms", type=float, default=0.0)
    p.add_argument("--work-ms", type=float, default=0.0)
    p.add_argument("--fail-percent", type=float, default=0.0)
    p.add_argument("--shedding", action="store_true")
    p.add_argument("--shedding-policy", default="{}", help="SheddingPolicy fields as JSON (experiments)")
    p.add_argument("--max-concurrent", type=int, default=None, help="grpc.aio's maximum_concurrent_rpcs")
    p.add_argument("--stats", action="store_true", help="record per-call wait and handler time (see above)")
    p.add_argument("--option", action="append", default=[], help="KEY=INT grpc server option (experiments)")
    asyncio.run(main(p.parse_args()))
