"""The ``grpcmesh`` command line (typer + rich).

Each command group lives in its own module and is mounted on :data:`app` here.
"""

from __future__ import annotations

import typer

from grpcmesh.cli import call_cmd as _call_cmd  # noqa: F401
from grpcmesh.cli import certs_cmd as _certs_cmd  # noqa: F401  (registers commands)
from grpcmesh.cli import dashboard_cmd as _dashboard_cmd  # noqa: F401  (registers commands)
from grpcmesh.cli import demo_cmd as _demo_cmd  # noqa: F401  (registers commands)
from grpcmesh.cli import health_cmd as _health_cmd  # noqa: F401
from grpcmesh.cli import register_cmd as _register_cmd  # noqa: F401  (registers commands)
from grpcmesh.cli import registry_cmds as _registry_cmds  # noqa: F401
from grpcmesh.cli.app import add_missing_extra_command, app
from grpcmesh.errors import MissingExtraError

try:
    from grpcmesh.cli.xds_cmd import xds_app
except ModuleNotFoundError as exc:  # the [xds] extra is not installed: say so when `xds` is used
    if exc.name is not None and exc.name.split(".")[0] == "grpcmesh":
        raise
    add_missing_extra_command("xds", "xds", "the xDS control plane", exc.name or "xds")
else:
    app.add_typer(xds_app, name="xds")


def main() -> None:
    """Console-script entry point; a command whose extra is missing prints the ``pip install`` to run."""
    try:
        app()
    except MissingExtraError as exc:
        typer.echo(f"grpcmesh: {exc}", err=True)
        raise SystemExit(1) from None


__all__ = ["app", "main"]
