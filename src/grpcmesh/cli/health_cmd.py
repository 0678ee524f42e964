"""``grpcmesh health NAME``: ask every instance of a service for its ``grpc.health.v1`` status now."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from grpcmesh.cli.app import RegistryOption, app, registry_url
from grpcmesh.errors import MeshError
from grpcmesh.model import HealthStatus
from grpcmesh.registry import open_registry
from grpcmesh.server import HealthReport, check_service_health

console = Console()


async def _check(url: str, name: str, timeout: float) -> HealthReport:
    async with open_registry(url) as registry:
        return await check_service_health(registry, name, timeout)


def _table(report: HealthReport) -> Table:
    table = Table(
        title=f"{report.name}: {report.status.value} ({report.serving}/{len(report.instances)} SERVING)",
        title_justify="left",
    )
    for column in ("instance", "address", "version", "health", "detail"):
        table.add_column(column)
    for item in report.instances:
        color = "green" if item.status is HealthStatus.SERVING else "red"
        table.add_row(
            item.instance.id[:12],
            item.instance.target,
            item.instance.version or "-",
            f"[{color}]{item.status.value}[/{color}]",
            item.error or "",
        )
    return table


@app.command("health")
def health_command(
    name: Annotated[str, typer.Argument(help="Service name.")],
    registry: Annotated[str | None, RegistryOption] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds each instance has to answer.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Aggregate health of a service: SERVING only if it has instances and every one answers SERVING.

    Exits 0 when SERVING, 1 otherwise (so scripts can use it as a probe).
    """
    try:
        report = asyncio.run(_check(registry_url(registry), name, timeout))
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
        console.print(f"{name}: {report.status.value} (no registered instances)")
    else:
        console.print(_table(report))
    if report.status is not HealthStatus.SERVING:
        raise typer.Exit(1)
