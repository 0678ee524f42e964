"""The ``grpcmesh`` command line (typer + rich).

Each command group lives in its own module and is mounted on :data:`app` here.
"""

from __future__ import annotations

from grpcmesh.cli import call_cmd as _call_cmd  # noqa: F401
from grpcmesh.cli import certs_cmd as _certs_cmd  # noqa: F401  (registers commands)
from grpcmesh.cli import dashboard_cmd as _dashboard_cmd  # noqa: F401  (registers commands)
from grpcmesh.cli import demo_cmd as _demo_cmd  # noqa: F401  (registers commands)
from grpcmesh.cli import health_cmd as _health_cmd  # noqa: F401
from grpcmesh.cli import register_cmd as _register_cmd  # noqa: F401  (registers commands)
from grpcmesh.cli import registry_cmds as _registry_cmds  # noqa: F401
from grpcmesh.cli.app import app
from grpcmesh.cli.xds_cmd import xds_app

app.add_typer(xds_app, name="xds")


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
