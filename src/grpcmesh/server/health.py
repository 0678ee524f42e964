"""``grpc.health.v1`` servicer whose ``Watch`` streams end when the server shuts down.

grpcio-health-checking's ``Watch`` never returns, so a client watching health (as gRPC's
client-side health checking does) would hold a graceful stop for its whole grace period.
Watchers first get NOT_SERVING (``enter_graceful_shutdown``), which is what tells clients
to go elsewhere; once the listener closes, their streams are ended so draining only waits
for real calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health

from grpcmesh._tasks import cancel_and_wait


class DrainingHealthServicer(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """grpcio-health-checking's public asyncio servicer (``health.aio.HealthServicer``) plus :meth:`end_watches`."""

    def __init__(self) -> None:
        super().__init__()
        self._ending = asyncio.Event()

    async def Watch(self, request: Any, context: Any) -> None:
        watching = asyncio.ensure_future(super().Watch(request, context))
        ending = asyncio.ensure_future(self._ending.wait())
        try:
            await asyncio.wait({watching, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((watching, ending))

    def end_watches(self) -> None:
        """End every ``Watch`` stream (now and later) with status OK."""
        self._ending.set()
