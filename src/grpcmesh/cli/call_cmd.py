"""``grpcmesh call NAME METHOD '{json}'``: call any method of a mesh service, grpcurl-style.

The method's descriptors come from the service's server reflection; the call goes through a
:class:`~grpcmesh.client.MeshChannel`, so it is balanced over the service's instances like
any mesh call.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import grpc
import typer
from google.protobuf import json_format

from grpcmesh.cli.app import RegistryOption, app, registry_url
from grpcmesh.cli.reflection import ReflectionClient, invoke
from grpcmesh.errors import MeshError
from grpcmesh.registry import open_registry

AUTH_METADATA_KEY = "service-auth-key"


def parse_headers(headers: list[str], auth_key: str | None) -> tuple[tuple[str, str], ...]:
    """``-H 'name: value'`` options (and the service auth key) as gRPC metadata."""
    metadata: list[tuple[str, str]] = []
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{header!r} is not 'name: value'", param_hint="--header")
        metadata.append((name.strip().lower(), value.strip()))
    if auth_key:
        metadata.append((AUTH_METADATA_KEY, auth_key))
    return tuple(metadata)


async def _call(
    url: str, name: str, method_spec: str, body: str, timeout: float, metadata: tuple[tuple[str, str], ...]
) -> list[str]:
    from grpcmesh.client import MeshChannel  # the client stack is only imported when a call is made

    async with open_registry(url) as registry:
        channel = MeshChannel(registry, name)
        try:
            method = await ReflectionClient(channel, metadata=metadata, timeout=timeout).resolve(method_spec)
            request = method.request_from_json(body)
            return [
                json_format.MessageToJson(reply, indent=2)
                async for reply in invoke(channel, method, request, timeout=timeout, metadata=metadata)
            ]
        finally:
            await channel.close()


@app.command("call")
def call_command(
    name: Annotated[str, typer.Argument(help="Service name, e.g. order-service.")],
    method: Annotated[str, typer.Argument(help="Method: CreateOrder, OrderService/CreateOrder or its full name.")],
    body: Annotated[str, typer.Argument(help="Request as JSON ('-' reads stdin).")] = "{}",
    registry: Annotated[str | None, RegistryOption] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="Extra request metadata, 'name: value' (repeatable).")
    ] = None,
    auth_key: Annotated[
        str | None,
        typer.Option(envvar="SERVICE_AUTH_KEY", show_envvar=True, help="Service auth key to send (mesh auth)."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds for the whole call.")] = 10.0,
) -> None:
    """Call a method of a service through the mesh, building the request from JSON via server reflection."""
    text = sys.stdin.read() if body == "-" else body
    metadata = parse_headers(header or [], auth_key)
    try:
        replies = asyncio.run(_call(registry_url(registry), name, method, text, timeout, metadata))
    except grpc.aio.AioRpcError as exc:
        typer.echo(f"ERROR:\n  Code: {exc.code().name}\n  Message: {exc.details()}", err=True)
        raise typer.Exit(1) from exc
    except MeshError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for reply in replies:
        typer.echo(reply)
