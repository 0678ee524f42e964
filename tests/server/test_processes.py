"""Real service processes: graceful SIGTERM under load, and readiness across processes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpcmesh import HealthStatus, open_registry
from grpcmesh.protos import echo_pb2, echo_pb2_grpc
from tests.helpers import next_matching, read_line_with, start_python, stop_process

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, name: str, registry: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"service:\n  name: {name}\n  version: v1\n  port: 0\n  propagation_delay: 1s\n  shutdown_grace: 15s\n"
        f"registry:\n  url: {registry}\n  deregister_after: 10s\n{extra}"
    )
    return path


async def start_service(config: Path, instance_id: str) -> tuple[asyncio.subprocess.Process, int, str]:
    proc = await start_python("-m", "tests.server.echo_proc", str(config), instance_id)
    try:
        line = await read_line_with(proc, "serving", timeout=30)
    except BaseException:
        await stop_process(proc)
        raise
    _, port, health = line.split()
    return proc, int(port), health


async def test_sigterm_under_load_completes_every_started_call(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'registry.db'}"
    proc, port, _ = await start_service(write_config(tmp_path, "echo-drain", url), "drain-1")
    loop = asyncio.get_running_loop()
    started = completed = 0
    failures: list[str] = []
    stop_sending = asyncio.Event()
    async with open_registry(url) as registry, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            stub = echo_pb2_grpc.EchoStub(channel)
            updates = registry.watch("echo-drain")
            await next_matching(updates, lambda s: [i.id for i in s] == ["drain-1"], timeout=10)

            async def discovery() -> float:
                # What a mesh client does: stop picking the instance once the registry drops it.
                await next_matching(updates, lambda s: s == [], timeout=30)
                stop_sending.set()
                return loop.time()

            async def worker() -> None:
                nonlocal started, completed
                for _ in range(200):  # bounded: at most 200 calls per worker
                    if stop_sending.is_set():
                        return
                    started += 1
                    try:
                        reply = await stub.Unary(echo_pb2.EchoRequest(message="x", delay_ms=50), timeout=20)
                        assert reply.instance_id == "drain-1"
                        completed += 1
                    except grpc.aio.AioRpcError as exc:
                        failures.append(f"{exc.code().name}: {exc.details()}")

            gone = asyncio.ensure_future(discovery())
            workers = [asyncio.ensure_future(worker()) for _ in range(4)]
            await asyncio.sleep(0.5)
            # A call that is still running when the listener closes (1s after SIGTERM).
            long_call = stub.Unary(echo_pb2.EchoRequest(message="long", delay_ms=2500), timeout=20)
            await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            exited_at = loop.time()
            gone_at = await asyncio.wait_for(gone, 5)
            await asyncio.wait_for(asyncio.gather(*workers), 30)
            assert (await long_call).message == "long"
        finally:
            await stop_process(proc)
        assert proc.returncode == 0
        assert failures == []
        assert started == completed
        assert started >= 8  # there was load when the signal came
        assert gone_at < exited_at  # deregistered before the process exited
        assert await registry.get_service("echo-drain") == []
    assert proc.stdout is not None
    assert b"exited" in await proc.stdout.read()


async def test_required_dependency_across_processes(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'registry.db'}"
    needs_backend = "dependencies:\n  - name: backend\n    version: v1\n    required: true\n"
    frontend, port, health = await start_service(write_config(tmp_path, "frontend", url, needs_backend), "front-1")
    backend = None
    try:
        assert health == "NOT_SERVING"
        async with open_registry(url) as registry, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            [registered] = await registry.get_service("frontend")
            assert registered.health is HealthStatus.NOT_SERVING
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await asyncio.wait_for(watch.read(), 10)).status == health_pb2.HealthCheckResponse.NOT_SERVING

            backend, _, backend_health = await start_service(write_config(tmp_path, "backend", url), "back-1")
            assert backend_health == "SERVING"
            assert (await asyncio.wait_for(watch.read(), 15)).status == health_pb2.HealthCheckResponse.SERVING
            frontends = registry.watch("frontend")
            await next_matching(frontends, lambda s: s[0].health is HealthStatus.SERVING, timeout=10)

            backend.send_signal(signal.SIGTERM)  # the dependency leaves: not ready again
            assert (await asyncio.wait_for(watch.read(), 15)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            await next_matching(frontends, lambda s: s[0].health is HealthStatus.NOT_SERVING, timeout=10)
            watch.cancel()
    finally:
        if backend is not None:
            await stop_process(backend)
        await stop_process(frontend)
