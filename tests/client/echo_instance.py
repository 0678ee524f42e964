"""Child process for client tests: an Echo server registered in a registry by hand.

Usage: python -m tests.client.echo_instance URL SERVICE ID [--weight N] [--version V]
       [--meta KEY=VALUE ...] [--delay-ms MS] [--ttl SECONDS] [--linger SECONDS]
Prints "ready PORT" once registered. On SIGTERM: deregister, wait ``--linger`` seconds
(clients see the change), then stop the server letting running calls finish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import grpc

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer, start_echo_server


class SlowEcho(EchoServicer):
    """Echo that takes at least ``delay_ms`` for every request (a deliberately slow instance)."""

    def __init__(self, instance_id: str, delay_ms: int) -> None:
        super().__init__(instance_id)
        self.delay = delay_ms / 1000

    async def _apply(self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        await asyncio.sleep(self.delay)
        await super()._apply(request, context)


async def start_server(instance_id: str, delay_ms: int) -> tuple[grpc.aio.Server, int]:
    if delay_ms <= 0:
        return await start_echo_server(instance_id)
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(SlowEcho(instance_id, delay_ms), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def main(args: argparse.Namespace) -> None:
    server, port = await start_server(args.id, args.delay_ms)
    registry = open_registry(args.url)
    metadata = dict(item.split("=", 1) for item in args.meta)
    instance = ServiceInstance(
        name=args.service,
        id=args.id,
        address="127.0.0.1",
        port=port,
        version=args.version,
        weight=args.weight,
        metadata=metadata,
    )
    await registry.register(instance, ttl=args.ttl)
    print(f"ready {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
        await registry.deregister(instance)
        await asyncio.sleep(args.linger)
    finally:
        await registry.close()
        await server.stop(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("service")
    parser.add_argument("id")
    parser.add_argument("--weight", type=int, default=100)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--meta", action="append", default=[])
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--linger", type=float, default=0.3)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
