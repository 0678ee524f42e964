"""A real Prometheus scrapes a running Echo service and answers a rate() query over its HTTP API."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from grpcmesh.middleware import MetricsServer, metrics_server_interceptor
from tests.helpers import free_port, stop_process
from tests.middleware.echo_calls import KINDS, call_kind, echo_server, echo_stub

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed (make test-deps)"),
]


async def query(session: aiohttp.ClientSession, api: str, promql: str) -> list[Any]:
    async with session.get(f"{api}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_prometheus_scrapes_service_and_rate_query_is_not_empty(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    async with (
        echo_server([metrics_server_interceptor(registry, service_name="echo-service")]) as port,
        echo_stub(port) as stub,
        MetricsServer(registry, port=free_port()) as metrics,
    ):
        web_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: echo\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{metrics.port}']\n"
        )
        log = (tmp_path / "prometheus.log").open("wb")
        prometheus = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
            stdout=log,
            stderr=log,
        )
        api = f"http://127.0.0.1:{web_port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                handled: list[Any] = []
                seed: list[Any] = []
                for _ in range(120):  # bounded: at most ~60 s
                    for kind in KINDS:
                        await call_kind(stub, kind)
                    await asyncio.sleep(0.5)
                    try:
                        handled = await query(session, api, 'rate(grpc_server_handled_total{grpc_code="OK"}[1m])')
                        seed = await query(session, api, 'grpc_service_requests_total{service="echo-service"}')
                    except aiohttp.ClientError:
                        continue  # Prometheus still starting
                    if handled and seed and any(float(r["value"][1]) > 0 for r in handled):
                        break
        finally:
            await stop_process(prometheus)
            log.close()

    assert handled, (tmp_path / "prometheus.log").read_text()[-2000:]
    assert any(float(r["value"][1]) > 0 for r in handled)
    scraped_types = {r["metric"]["grpc_type"] for r in handled}
    assert scraped_types == set(KINDS)
    assert {r["metric"]["status"] for r in seed} == {"OK"}
