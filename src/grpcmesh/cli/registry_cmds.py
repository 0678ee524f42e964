"""``grpcmesh ls`` and ``grpcmesh watch``: what the registry holds, now and as it changes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from grpcmesh.cli.app import ConfigOption, RegistryOption, app, make_console, registry_url
from grpcmesh.errors import MeshError
from grpcmesh.model import ServiceInstance
from grpcmesh.registry import open_registry

console = make_console()


def instances_table(title: str, instances: list[ServiceInstance]) -> Table:
    """A rich table of instances: the shared view of ``ls`` and ``watch``.

    Every cell is a ``Text``, never markup: registry data is written by anyone who can reach the
    registry, and a version like ``[/x]`` must print as itself, not crash the table.
    """
    table = Table(title=Text(title), title_justify="left")
    for column in ("service", "id", "address", "version", "health", "weight", "endpoints"):
        table.add_column(column, overflow="fold")
    for inst in instances:
        color = "green" if inst.health.value == "SERVING" else "red"
        table.add_row(
            Text(inst.name),
            Text(inst.id[:12]),
            Text(inst.target),
            Text(inst.version or "-"),
            Text(inst.health.value, style=color),
            Text(str(inst.weight)),
            Text(",".join(inst.endpoints) or "-"),
        )
    return table


async def _ls(url: str) -> list[ServiceInstance]:
    async with open_registry(url) as registry:
        found: list[ServiceInstance] = []
        for name in await registry.list_services():
            found.extend(await registry.get_service(name))
        return found


@app.command("ls")
def ls_command(
    registry: Annotated[str | None, RegistryOption] = None,
    config: Annotated[Path | None, ConfigOption] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print instances as JSON.")] = False,
) -> None:
    """List every registered service instance."""
    try:
        instances = asyncio.run(_ls(registry_url(registry, config)))
    except MeshError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps([inst.model_dump(mode="json") for inst in instances], indent=2))
    else:
        console.print(instances_table(f"{len(instances)} instance(s)", instances))


async def _watch(url: str, name: str, limit: int | None) -> None:
    async with open_registry(url) as registry:
        seen = 0
        async for snapshot in registry.watch(name):
            console.print(instances_table(f"{name}: {len(snapshot)} instance(s)", snapshot))
            seen += 1
            if limit is not None and seen >= limit:
                return


@app.command("watch")
def watch_command(
    name: Annotated[str, typer.Argument(help="Service name to watch.")],
    registry: Annotated[str | None, RegistryOption] = None,
    config: Annotated[Path | None, ConfigOption] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many snapshots.")] = None,
) -> None:
    """Print a service's instances, then again at every change (Ctrl-C to stop)."""
    try:
        asyncio.run(_watch(registry_url(registry, config), name, count))
    except MeshError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except KeyboardInterrupt:
        pass
