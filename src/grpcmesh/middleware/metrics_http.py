"""``/metrics`` over plain asyncio: the Prometheus endpoint needs no web framework.

One request per connection (``Connection: close``), request head bounded in size and time,
so a slow or hostile client cannot hold the endpoint or grow memory. ``GET``/``HEAD`` of
``/metrics`` answer the registry in the text exposition format; other paths 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("grpcmesh.metrics")

MAX_REQUEST_HEAD = 16 * 1024
REQUEST_TIMEOUT = 10.0


class MetricsServer:
    """An asyncio HTTP server exposing one registry at ``/metrics`` (bound to 127.0.0.1 by default)."""

    def __init__(self, registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1") -> None:
        self._registry = registry
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port: int | None = None
        """The bound port once started (useful with ``port=0``)."""

    async def start(self) -> None:
        if self._server is not None:
            return
        server = await asyncio.start_server(self._accept, self._host, self._requested_port, limit=MAX_REQUEST_HEAD)
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method not in (b"GET", b"HEAD"):
                await self._respond(writer, b"405 Method Not Allowed", b"text/plain", b"GET only\n", head=False)
            elif path != b"/metrics":
                await self._respond(writer, b"404 Not Found", b"text/plain", b"see /metrics\n", head=False)
            else:
                body = generate_latest(self._registry)
                await self._respond(writer, b"200 OK", CONTENT_TYPE_LATEST.encode(), body, head=method == b"HEAD")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass  # a client that went away or sent garbage: nothing to answer
        except Exception:
            log.exception("metrics endpoint failed to answer a request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter, status: bytes, content_type: bytes, body: bytes, *, head: bool
    ) -> None:
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: "
            + content_type
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        if not head:
            writer.write(body)
        await writer.drain()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
