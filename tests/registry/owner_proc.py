"""Child process for registry tests: registers instances on a registry URL, then waits to be killed.

Usage: python -m tests.registry.owner_proc URL SERVICE COUNT TTL [ID_PREFIX]
Prints "ready" once every registration is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from grpcmesh import ServiceInstance, open_registry


async def main(url: str, service: str, count: int, ttl: float, prefix: str) -> None:
    registry = open_registry(url)
    for i in range(count):
        await registry.register(
            ServiceInstance(name=service, id=f"{prefix}{i}", address="127.0.0.1", port=10000 + i), ttl=ttl
        )
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await registry.close()


if __name__ == "__main__":
    url, service, count, ttl = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    prefix = sys.argv[5] if len(sys.argv) > 5 else "p"
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(url, service, count, ttl, prefix))
