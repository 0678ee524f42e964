"""Observed edges end to end without a browser: real meshes (their own metrics endpoints and
client series labelled ``caller``/``callee``), real calls, the dashboard's ``/api/state``."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from grpcmesh import Mesh
from grpcmesh.config import MeshConfig
from grpcmesh.config.models import MetricsConfig, ServiceConfig
from grpcmesh.dashboard import Dashboard
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from grpcmesh.testing import EchoServicer


def mesh_config(name: str) -> MeshConfig:
    return MeshConfig(
        service=ServiceConfig(name=name),
        metrics=MetricsConfig(enabled=True, prometheus_port=0),
    )


async def test_calls_between_meshes_become_an_observed_edge_with_history(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'registry.db'}"
    async with (
        Mesh(url, config=mesh_config("frontend")) as frontend,
        Mesh(url, config=mesh_config("backend")) as backend,
    ):
        backend_server = backend.server(instance_id="b1", handle_signals=False)
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("b1"), backend_server.grpc)
        await backend_server.start()
        frontend_server = frontend.server(instance_id="f1", dependencies=["backend", "audit"], handle_signals=False)
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("f1"), frontend_server.grpc)
        await frontend_server.start()
        stub = echo_pb2_grpc.EchoStub(frontend.channel("backend"))
        stop = asyncio.Event()

        async def traffic() -> int:
            made = 0
            while not stop.is_set() and made < 2000:
                failing = made % 10 == 9
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.Unary(echo_pb2.EchoRequest(message="x", fail_code=14 if failing else 0), timeout=5)
                made += 1
                await asyncio.sleep(0.01)
            return made

        load = asyncio.create_task(traffic())
        try:
            async with (
                Dashboard(url, port=0, scrape_interval=1.0, relist_interval=0.5) as dashboard,
                aiohttp.ClientSession() as http,
            ):
                state = await wait_for_edge(http, dashboard.url, "frontend", "backend")
        finally:
            stop.set()
            assert await load > 0
    edges = {(e["from"], e["to"]): e for e in state["edges"]}
    edge = edges["frontend", "backend"]
    assert (edge["declared"], edge["observed"]) == (True, True)
    assert edge["rates"]["calls_per_second"] > 0
    assert 0 < edge["rates"]["error_ratio"] < 0.5  # every 10th call fails with UNAVAILABLE
    assert edge["rates"]["p99_seconds"] is not None
    # declared but never called: drawn dashed
    assert (edges["frontend", "audit"]["declared"], edges["frontend", "audit"]["observed"]) == (True, False)
    # the test itself calls the backend only through the frontend mesh: no external caller
    assert ("external", "backend") not in edges
    backend_json = next(s for s in state["services"] if s["name"] == "backend")
    assert backend_json["history"]["points"], "no history point recorded"
    # registered before the dashboard started: in the health history, not marked as a change
    assert backend_json["history"]["markers"] == []
    instance = backend_json["instances"][0]
    assert instance["metrics"]["status"] == "ok"
    assert instance["health_history"][-1]["health"] == "SERVING"


async def wait_for_edge(http: aiohttp.ClientSession, url: str, source: str, target: str) -> dict[str, Any]:
    """``/api/state`` once the edge shows calls and errors and both ends were scraped in the same
    round (bounded wait: on a loaded machine one scrape can time out and miss a round)."""
    state: dict[str, Any] = {}
    for _ in range(60):
        await asyncio.sleep(0.5)
        async with http.get(url + "api/state") as response:
            state = await response.json()
        scraped = all(i["metrics"]["status"] == "ok" for s in state["services"] for i in s["instances"])
        for edge in state["edges"]:
            rates = edge["rates"]
            if (edge["from"], edge["to"]) == (source, target) and rates and rates["error_ratio"] > 0 and scraped:
                return state
    raise AssertionError(f"no {source}->{target} edge with calls and errors: {state.get('edges')}")
