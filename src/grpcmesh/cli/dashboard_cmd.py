"""``grpcmesh dashboard``: serve the live web dashboard of a registry's mesh."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from grpcmesh.cli.app import ConfigOption, RegistryOption, app, registry_url
from grpcmesh.errors import MeshError


@app.command("dashboard")
def dashboard_command(
    registry: Annotated[str | None, RegistryOption] = None,
    config: Annotated[Path | None, ConfigOption] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 8080,
    history: Annotated[
        float, typer.Option("--history", help="Seconds of rates kept for the charts (60 to 3600).")
    ] = 600.0,
) -> None:
    """Serve a live web dashboard: observed calls between services, instances with calls/s, p99, errors,
    short history charts and registry events."""
    from grpcmesh.dashboard import serve_dashboard  # aiohttp is only imported when the command runs

    def ready(url: str) -> None:
        typer.echo(f"grpcmesh dashboard on {url}  (Ctrl-C to stop)")

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                serve_dashboard(
                    registry_url(registry, config), host=host, port=port, on_ready=ready, history_seconds=history
                )
            )
    except MeshError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc}", param_hint="--host/--port") from exc
