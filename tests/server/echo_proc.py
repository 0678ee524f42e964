"""Child process: an Echo service run from a YAML config, exactly as a user's service would run.

Usage: python -m tests.server.echo_proc CONFIG INSTANCE_ID
Prints "serving PORT HEALTH" once registered and "exited" after a graceful stop (SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from grpcmesh import Mesh
from grpcmesh.protos import echo_pb2_grpc
from grpcmesh.testing import EchoServicer


async def main(config: str, instance_id: str) -> None:
    async with Mesh.from_config(config) as mesh:
        server = mesh.server(instance_id=instance_id)
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(instance_id), server.grpc)
        await server.start()
        print(f"serving {server.port} {server.instance.health.value}", flush=True)
        await server.serve()
    print("exited", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=f"[{sys.argv[2]}] %(name)s %(levelname)s %(message)s")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
