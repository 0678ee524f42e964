"""``grpcmesh health NAME``: ask every instance of a service for its ``grpc.health.v1`` status now."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.table import Table
from rich.text import Text

from grpcmesh.cli.app import (
    CaOption,
    CertOption,
    ConfigOption,
    KeyOption,
    RegistryOption,
    TlsFlags,
    TlsOption,
    app,
    cli_config,
    make_console,
)
from grpcmesh.config import SecurityConfig
from grpcmesh.errors import MeshError
from grpcmesh.model import HealthStatus
from grpcmesh.registry import open_registry
from grpcmesh.security.tls import handshake_hint
from grpcmesh.server import HealthReport, check_service_health

console = make_console()


async def _check(url: str, name: str, timeout: float, credentials: grpc.ChannelCredentials | None) -> HealthReport:
    async with open_registry(url) as registry:
        return await check_service_health(registry, name, timeout, credentials=credentials)


def _with_hints(report: HealthReport, security: SecurityConfig) -> HealthReport:
    """The report with the likely cause appended to every connection error."""
    items = []
    for item in report.instances:
        hint = handshake_hint(item.error, security) if item.error else None
        items.append(dataclasses.replace(item, error=f"{item.error} (hint: {hint})") if hint else item)
    return dataclasses.replace(report, instances=tuple(items))


def _table(report: HealthReport) -> Table:
    """The report as a table of ``Text`` cells: registry data and errors are never read as markup."""
    table = Table(
        title=Text(f"{report.name}: {report.status.value} ({report.serving}/{len(report.instances)} SERVING)"),
        title_justify="left",
    )
    for column in ("instance", "address", "version", "health", "detail"):
        table.add_column(column, overflow="fold")
    for item in report.instances:
        color = "green" if item.status is HealthStatus.SERVING else "red"
        table.add_row(
            Text(item.instance.id[:12]),
            Text(item.instance.target),
            Text(item.instance.version or "-"),
            Text(item.status.value, style=color),
            Text(item.error or ""),
        )
    return table


@app.command("health")
def health_command(
    name: Annotated[str, typer.Argument(help="Service name.")],
    registry: Annotated[str | None, RegistryOption] = None,
    config: Annotated[Path | None, ConfigOption] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds each instance has to answer.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    tls: Annotated[bool | None, TlsOption] = None,
    ca: Annotated[Path | None, CaOption] = None,
    cert: Annotated[Path | None, CertOption] = None,
    key: Annotated[Path | None, KeyOption] = None,
) -> None:
    """Aggregate health of a service: SERVING only if it has instances and every one answers SERVING.

    Exits 0 when SERVING, 1 otherwise (so scripts can use it as a probe).
    """
    try:
        settings = cli_config(config)
        flags = TlsFlags(tls, ca, cert, key)
        credentials = flags.credentials(settings.security)
        url = registry or settings.registry.resolved_url
        report = _with_hints(asyncio.run(_check(url, name, timeout, credentials)), flags.security(settings.security))
    except MeshError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if as_json:
        payload = {
            "service": report.name,
            "status": report.status.value,
            "instances": [
                {
                    "id": item.instance.id,
                    "address": item.instance.target,
                    "version": item.instance.version,
                    "status": item.status.value,
                    "error": item.error,
                }
                for item in report.instances
            ],
        }
        typer.echo(json.dumps(payload, indent=2))
    elif not report.instances:
        console.print(Text(f"{name}: {report.status.value} (no registered instances)"))
    else:
        console.print(_table(report))
    if report.status is not HealthStatus.SERVING:
        raise typer.Exit(1)
