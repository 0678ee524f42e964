"""The CLI against a real sqlite registry shared with this process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from grpcmesh import ServiceInstance, open_registry
from tests.helpers import python_env


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = python_env()
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "grpcmesh.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


async def test_ls_json_lists_registered_instances(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/reg.db"
    async with open_registry(url) as reg:
        await reg.register(ServiceInstance(name="user-service", id="u1", address="127.0.0.1", port=5001))
        await reg.register(ServiceInstance(name="order-service", id="o1", address="127.0.0.1", port=5002))
        # Off the event loop, so this owner's heartbeats keep running while the CLI starts (a cold
        # start on a loaded machine can outlast the 10 s TTL; a blocked loop would let them expire).
        out = await asyncio.to_thread(run_cli, "ls", "--json", env_extra={"GRPCMESH_REGISTRY": url})
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert sorted((i["name"], i["id"], i["port"]) for i in listed) == [
            ("order-service", "o1", 5002),
            ("user-service", "u1", 5001),
        ]


def test_ls_bad_registry_url_is_a_clear_error() -> None:
    out = run_cli("ls", "--registry", "zookeeper://x")
    assert out.returncode != 0
    assert "unknown registry scheme" in out.stderr
