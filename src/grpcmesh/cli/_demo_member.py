"""A demo member process: serve Echo on 127.0.0.1, register it, deregister on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

from grpcmesh.model import ServiceInstance
from grpcmesh.registry import open_registry
from grpcmesh.testing import start_echo_server


async def main(url: str, service: str) -> None:
    instance_id = uuid.uuid4().hex[:8]
    server, port = await start_echo_server(instance_id)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with open_registry(url) as registry:
        await registry.register(
            ServiceInstance(
                name=service,
                id=instance_id,
                address="127.0.0.1",
                port=port,
                version="v1",
                endpoints=("Unary", "ServerStream", "ClientStream", "BidiStream"),
            ),
            ttl=2.0,
        )
        await stop.wait()
    await server.stop(1.0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
