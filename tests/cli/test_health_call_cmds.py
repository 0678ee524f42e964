"""``grpcmesh health`` and ``grpcmesh call`` failure paths (their happy paths run in tests/demo)."""

from __future__ import annotations

import json
from pathlib import Path

from grpcmesh import ServiceInstance, open_registry
from tests.cli.test_registry_cmds import run_cli
from tests.helpers import free_port


def test_health_of_unknown_service_is_not_serving(tmp_path: Path) -> None:
    out = run_cli("health", "ghost-service", "--registry", f"sqlite://{tmp_path}/reg.db")
    assert out.returncode == 1
    assert "no registered instances" in out.stdout


async def test_health_reports_an_instance_that_does_not_answer(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/reg.db"
    async with open_registry(url) as reg:
        await reg.register(ServiceInstance(name="user-service", id="dead1", address="127.0.0.1", port=free_port()))
        out = run_cli("health", "user-service", "--json", "--timeout", "1", "--registry", url)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["status"] == "NOT_SERVING"
    assert [i["id"] for i in report["instances"]] == ["dead1"]
    assert report["instances"][0]["status"] == "NOT_SERVING"
    assert "UNAVAILABLE" in report["instances"][0]["error"]


def test_call_rejects_a_malformed_header(tmp_path: Path) -> None:
    out = run_cli("call", "user-service", "GetUser", "{}", "-H", "no-colon", "--registry", f"sqlite://{tmp_path}/r.db")
    assert out.returncode == 2
    assert "is not 'name: value'" in out.stderr
