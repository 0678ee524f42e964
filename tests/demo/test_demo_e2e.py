"""``grpcmesh demo`` end to end: the real shop processes, traffic, the chaos kill, then the CLI against it.

One bounded demo run (``DEMO_SECONDS``) serves every check, to keep the suite's time modest:
while it runs, ``ls --json`` lists the 8 instances, ``health`` aggregates them and ``call``
creates a user and an order through reflection; after it ends, the summary says traffic
flowed with no failed call and the chaos kill happened, and nothing it started is left.
Then one service is started again on the same data: the user created during the demo is
still there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, python_env

pytestmark = pytest.mark.slow

AUTH_KEY = "e2e-demo-key"


def cli(*args: str, timeout: float = 60, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = python_env()
    env.update(SERVICE_AUTH_KEY=AUTH_KEY, COLUMNS="160", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "grpcmesh.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def wait_for_instances(registry: str, count: int, timeout: float = 90) -> list[dict[str, Any]]:
    """``ls --json`` once ``count`` instances are SERVING."""
    deadline = time.monotonic() + timeout
    listed: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        out = cli("ls", "--json", "--registry", registry)
        if out.returncode == 0:
            listed = json.loads(out.stdout)
            if sum(1 for inst in listed if inst["health"] == "SERVING") >= count:
                return listed
        time.sleep(0.5)
    raise AssertionError(f"never saw {count} SERVING instances; last listing: {listed}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def nobody_listens(port: int) -> bool:
    """Connection refused: no server left on ``port`` (binding could fail on TIME_WAIT leftovers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_demo_runs_the_shop_with_chaos_and_the_cli_works_against_it(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    registry = f"sqlite://{workdir / 'registry.db'}"
    summary_path = tmp_path / "summary.json"
    env = python_env()
    env.update(SERVICE_AUTH_KEY=AUTH_KEY, DEMO_SECONDS="25", COLUMNS="160")
    with (tmp_path / "demo.out").open("w") as out:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "grpcmesh.cli",
                "demo",
                "--workdir",
                str(workdir),
                "--rate",
                "6",
                "--summary-json",
                str(summary_path),
                "--dashboard",
                "--dashboard-port",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        try:
            listed = wait_for_instances(registry, 8)
            names = sorted(inst["name"] for inst in listed)
            assert len(listed) == 8
            assert names == sorted(
                [s for s in ("user-service", "order-service", "payment-service", "notification-service") for _ in "ab"]
            )
            ports = [inst["port"] for inst in listed]

            dashboard_url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", (tmp_path / "demo.out").read_text())
            assert dashboard_url, "the demo did not print its dashboard URL"
            shown: list[str] = []
            for _ in range(40):  # the dashboard re-lists services every second
                with urllib.request.urlopen(dashboard_url.group(1) + "api/state", timeout=10) as response:
                    shown = sorted(s["name"] for s in json.loads(response.read())["services"])
                if shown == sorted(set(names)):
                    break
                time.sleep(0.25)
            assert shown == sorted(set(names))

            health = cli("health", "order-service", "--registry", registry)
            assert health.returncode == 0, health.stdout + health.stderr
            assert "SERVING (2/2 SERVING)" in health.stdout

            created = cli(
                "call",
                "user-service",
                "CreateUser",
                '{"name": "E2E", "email": "e2e@example.com"}',
                "--registry",
                registry,
            )
            assert created.returncode == 0, created.stderr
            user = json.loads(created.stdout)["user"]
            assert user["email"] == "e2e@example.com"
            body = json.dumps(
                {
                    "userId": user["id"],
                    "items": [{"sku": "sku-mug", "name": "Mug", "quantity": 2, "unitPriceCents": 1299}],
                }
            )
            ordered = cli(
                "call", "order-service", "shop.order.v1.OrderService/CreateOrder", body, "--registry", registry
            )
            assert ordered.returncode == 0, ordered.stderr
            order = json.loads(ordered.stdout)["order"]
            assert order["userId"] == user["id"]
            assert order["totalCents"] == "2598"
            assert order["status"] == "ORDER_STATUS_PAID"
            assert order["paymentId"].startswith("pay_")

            assert demo.wait(timeout=150) == 0, (tmp_path / "demo.out").read_text()[-3000:]
        finally:
            if demo.poll() is None:
                demo.send_signal(signal.SIGINT)
                demo.wait(timeout=60)

    output = (tmp_path / "demo.out").read_text()
    summary = json.loads(summary_path.read_text())
    assert summary["calls"] > 0, output[-3000:]
    assert summary["failed"] == 0, summary["errors"]
    assert summary["server_calls"] > 0  # the shop configs enable metrics: every instance exposes them
    assert summary["server_errors"] == 0
    assert summary["chaos"], "the chaos kill did not happen"
    assert summary["chaos"][0]["replacement_serving_after_s"] is not None
    assert "failed calls: 0" in output
    assert "with SIGKILL" in output
    assert summary["pids"]
    leftovers = [pid for pid in summary["pids"] if pid_alive(pid)]
    assert not leftovers, f"processes left running: {leftovers}"
    assert all(nobody_listens(port) for port in ports)

    # Restart one service on the demo's data: the user created through `call` is still there.
    service_env = python_env()
    service_env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "examples" / "shop"), service_env["PYTHONPATH"]]),
        SERVICE_AUTH_KEY=AUTH_KEY,
        GRPCMESH_REGISTRY=registry,
        GRPCMESH_SERVICE_PORT="0",
        GRPCMESH_METRICS_PROMETHEUS_PORT="0",
        SHOP_DATA_DIR=str(workdir / "data"),
    )
    service = subprocess.Popen(
        [sys.executable, "-m", "shop", "serve", "user-service"],
        env=service_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_instances(registry, 1, timeout=60)
        got = cli("call", "user-service", "GetUser", json.dumps({"id": user["id"]}), "--registry", registry)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["user"] == user
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
