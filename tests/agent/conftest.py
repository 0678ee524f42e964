"""Fixtures: servers written without grpcmesh (plain grpcio in Python, and Go), built in tmp dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def plain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plain server script and Echo stubs compiled outside the grpcmesh package."""
    out = tmp_path_factory.mktemp("plain-server")
    shutil.copy(ROOT / "src" / "grpcmesh" / "protos" / "echo.proto", out / "echo.proto")
    shutil.copy(HERE / "plain_server.py", out / "plain_server.py")
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{out}", f"--python_out={out}"]
    subprocess.run([*command, f"--grpc_python_out={out}", "echo.proto"], check=True)
    return out


GOPATH_SYSTEM = Path("/usr/share/gocode")


@pytest.fixture(scope="session")
def go_server(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go health server, built offline from Debian's golang-google-grpc-dev sources."""
    go = shutil.which("go")
    if go is None or not (GOPATH_SYSTEM / "src" / "google.golang.org" / "grpc").is_dir():
        pytest.skip("needs golang-go and golang-google-grpc-dev (scripts/install-test-deps.sh)")
    out = tmp_path_factory.mktemp("go-server")
    shutil.copy(HERE / "health_server.go", out / "health_server.go")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{out / 'gopath'}:{GOPATH_SYSTEM}", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(out / "health_server"), "health_server.go"], cwd=out, env=env, check=True)
    return out / "health_server"
