"""An Echo server in a process of its own, for benchmarks that need real separate servers.

``--mode plain``: a bare ``grpc.aio`` server (``grpcmesh.testing.start_echo_server``).
``--mode mesh``: a ``MeshServer`` that registers in ``--registry`` and leaves gracefully on
SIGTERM (NOT_SERVING, deregister, drain), as a grpcmesh service does.
``--stack full|tracing|logging|metrics|auth`` (with ``--mode plain``): a ``MeshServer`` running
that part of the mesh's server concerns (see ``_middleware.py``), in a memory registry of its
own; ``--stack peer``: a bare ``grpc.aio`` server with the peer interceptors.

Prints one JSON line ``{"port": N, "id": ...}`` once it serves; binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import grpc
from _harness import ROOT  # noqa: F401 - puts src/ on sys.path

from grpcmesh.protos import echo_pb2_grpc
from grpcmesh.testing import EchoServicer, start_echo_server


async def plain(args: argparse.Namespace) -> None:
    if args.stack not in ("none", "peer"):
        await stacked(args)
        return
    if args.stack == "peer":
        from _middleware import peer_server_interceptors

        server = grpc.aio.server(interceptors=peer_server_interceptors(args.instance_id, args.sample_rate))
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


async def stacked(args: argparse.Namespace) -> None:
    """A ``MeshServer`` whose per-method wrapper runs ``--stack`` (built as ``Mesh`` builds it)."""
    from _middleware import mesh_middleware

    from grpcmesh import open_registry
    from grpcmesh.server import MeshServer, ServerSettings

    middleware = mesh_middleware(args.instance_id, args.stack, args.sample_rate, args.access_log)
    registry = open_registry(f"memory://{args.instance_id}")
    settings = ServerSettings(
        name=args.instance_id, port=args.port, host="127.0.0.1", handle_signals=False, propagation_delay=0.0
    )
    server = MeshServer(registry, settings, concerns=middleware.server_concerns)
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(args.instance_id), server.grpc)
    await server.start()
    print(json.dumps({"port": server.port, "id": args.instance_id}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    await middleware.close()
    await registry.close()


async def mesh(args: argparse.Namespace) -> None:
    from grpcmesh import Mesh

    async with Mesh(args.registry) as the_mesh:
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["plain", "mesh"], default="plain")
    p.add_argument("--registry", default="")
    p.add_argument("--name", default="echo")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--instance-id", default="echo-0")
    p.add_argument("--ttl", type=float, default=3.0)
    p.add_argument("--propagation-delay", type=float, default=0.5)
    p.add_argument(
        "--stack", choices=["none", "peer", "empty", "full", "tracing", "logging", "metrics", "auth"], default="none"
    )
    p.add_argument("--sample-rate", type=float, default=1.0, help="tracing sample rate with --stack")
    p.add_argument("--access-log", default="sampled", help="logging.access_log with --stack")
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
