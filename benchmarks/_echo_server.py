"""An Echo server in a process of its own, for benchmarks that need real separate servers.

``--mode plain``: a bare ``grpc.aio`` server (``grpcmesh.testing.start_echo_server``).
``--mode mesh``: a ``MeshServer`` that registers in ``--registry`` and leaves gracefully on
SIGTERM (NOT_SERVING, deregister, drain), as a grpcmesh service does.
``--middleware``: the server-side auth, metrics, tracing and logging interceptors.

Prints one JSON line ``{"port": N, "id": ...}`` once it serves; binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

import grpc
from _harness import ROOT  # noqa: F401 - puts src/ on sys.path

from grpcmesh.protos import echo_pb2_grpc
from grpcmesh.testing import EchoServicer, start_echo_server


async def plain(args: argparse.Namespace) -> None:
    if args.middleware:
        server = grpc.aio.server(interceptors=server_middleware(args.instance_id, args.sample_rate))
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(args.instance_id), server)
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
        await server.start()
    else:
        server, port = await start_echo_server(args.instance_id, "127.0.0.1", args.port)
    print(json.dumps({"port": port, "id": args.instance_id}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


async def mesh(args: argparse.Namespace) -> None:
    from grpcmesh import Mesh

    interceptors = server_middleware(args.instance_id, args.sample_rate) if args.middleware else []
    async with Mesh(args.registry, server_interceptors=interceptors) as the_mesh:
        server = the_mesh.server(
            args.name,
            version="v1",
            port=args.port,
            host="127.0.0.1",
            instance_id=args.instance_id,
            ttl=args.ttl,
            shutdown_grace=5.0,
            propagation_delay=args.propagation_delay,
            reflection=False,
        )
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(args.instance_id), server.grpc)
        await server.start()
        print(json.dumps({"port": server.port, "id": args.instance_id}), flush=True)
        await server.serve()


def server_middleware(instance_id: str, sample_rate: float) -> list[Any]:
    """The server half of auth + metrics + tracing + logging (see _middleware.py)."""
    from _middleware import server_interceptors

    return server_interceptors(instance_id, sample_rate)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["plain", "mesh"], default="plain")
    p.add_argument("--registry", default="")
    p.add_argument("--name", default="echo")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--instance-id", default="echo-0")
    p.add_argument("--ttl", type=float, default=3.0)
    p.add_argument("--propagation-delay", type=float, default=0.5)
    p.add_argument("--middleware", action="store_true")
    p.add_argument("--sample-rate", type=float, default=1.0, help="tracing sample rate with --middleware")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = p.parse_args()
    coro = plain(args) if args.mode == "plain" else mesh(args)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)
    sys.exit(0)


if __name__ == "__main__":
    main()
