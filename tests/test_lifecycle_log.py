"""Lifecycle lines by default: a service that configures no logging still says what it does.

Each case runs a real service in a child process (the parent's pytest logging would count as
"the application configured logging"), with its config's ``logging:`` section deciding the format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import python_env

SERVICE = """
import asyncio, logging, sys

import grpcmesh
from grpcmesh.protos import echo_pb2_grpc
from grpcmesh.testing import EchoServicer

if "--app-logging" in sys.argv:
    logging.basicConfig(level=logging.INFO, format="APP %(name)s %(message)s")


async def main() -> None:
    async with grpcmesh.Mesh.from_config("svc.yaml") as mesh:
        server = mesh.server()
        echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer("e1"), server.grpc)
        async with server:
            pass


asyncio.run(main())
"""


def run_service(tmp_path: Path, logging_section: str, *args: str) -> str:
    (tmp_path / "svc.yaml").write_text(
        "service:\n  name: echo-service\n  host: 127.0.0.1\n  port: 0\n  propagation_delay: 0s\n"
        f"registry:\n  url: sqlite:{tmp_path}/reg.db\n{logging_section}"
    )
    (tmp_path / "svc.py").write_text(SERVICE)
    env = {k: v for k, v in python_env().items() if not k.startswith("GRPCMESH_")}
    out = subprocess.run(
        [sys.executable, "svc.py", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_json_lines_by_default(tmp_path: Path) -> None:
    lines = [json.loads(line) for line in run_service(tmp_path, "").splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines if line.get("logger", "").startswith("grpcmesh")]
    assert any("echo-service listening on 127.0.0.1:" in e and "registered as" in e for e in events), events
    assert any("deregistered" in e for e in events), events
    assert any(e == "echo-service stopped" for e in events), events
    assert all(line["level"] == "info" for line in lines if line.get("logger") == "grpcmesh.server")


def test_console_format_when_asked(tmp_path: Path) -> None:
    err = run_service(tmp_path, "logging:\n  format: console\n")
    assert "[info   ] echo-service listening on 127.0.0.1:" in err, err
    assert "logger=grpcmesh.server" in err


@pytest.mark.parametrize(
    ("section", "expected"),
    [("logging:\n  lifecycle: false\n", 0), ("logging:\n  level: WARNING\n", 0)],
    ids=["lifecycle-off", "level-warning"],
)
def test_silenced_by_the_config(tmp_path: Path, section: str, expected: int) -> None:
    err = run_service(tmp_path, section)
    assert err.count("listening on") == expected, err


def test_application_logging_takes_over(tmp_path: Path) -> None:
    err = run_service(tmp_path, "", "--app-logging")
    lines = [line for line in err.splitlines() if "listening on" in line]
    assert len(lines) == 1, err  # once, through the application's handler
    assert lines[0].startswith("APP grpcmesh.server echo-service listening on"), err
