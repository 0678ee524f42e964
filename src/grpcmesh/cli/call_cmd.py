"""``grpcmesh call NAME METHOD '{json}'``: call any method of a mesh service, grpcurl-style.

The method's descriptors come from the service's server reflection; the call goes through a
:class:`~grpcmesh.client.MeshChannel`, so it is balanced over the service's instances like
any mesh call.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.protobuf import json_format

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
)
from grpcmesh.cli.reflection import ReflectionClient, invoke
from grpcmesh.errors import MeshError, NoEndpointsError
from grpcmesh.registry import Registry, open_registry
from grpcmesh.security.tls import handshake_hint

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


async def _check_known(registry: Registry, name: str) -> None:
    """Fail at once, listing the known services, when ``name`` has no registered instance."""
    if await registry.get_service(name):
        return
    known = await registry.list_services()
    listing = ", ".join(sorted(known)) if known else "none"
    raise NoEndpointsError(f"no instance of {name!r} is registered; known services: {listing}")


async def _call(
    url: str,
    name: str,
    method_spec: str,
    body: str,
    timeout: float,
    metadata: tuple[tuple[str, str], ...],
    credentials: grpc.ChannelCredentials | None = None,
) -> list[str]:
    from grpcmesh.client import MeshChannel  # the client stack is only imported when a call is made

    async with open_registry(url) as registry:
        await _check_known(registry, name)
        channel = MeshChannel(registry, name, credentials=credentials)
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
    config: Annotated[Path | None, ConfigOption] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="Extra request metadata, 'name: value' (repeatable).")
    ] = None,
    auth_key: Annotated[
        str | None,
        typer.Option(
            envvar="SERVICE_AUTH_KEY",
            show_envvar=True,
            help="Service auth key to send (mesh auth; default: the config's security.service_auth_key).",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds for the whole call.")] = 10.0,
    tls: Annotated[bool | None, TlsOption] = None,
    ca: Annotated[Path | None, CaOption] = None,
    cert: Annotated[Path | None, CertOption] = None,
    key: Annotated[Path | None, KeyOption] = None,
) -> None:
    """Call a method of a service through the mesh, building the request from JSON via server reflection."""
    text = sys.stdin.read() if body == "-" else body
    try:
        settings = cli_config(config)
    except MeshError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc
    configured_key = settings.security.service_auth_key
    if auth_key is None and configured_key is not None:
        auth_key = configured_key.get_secret_value()
    metadata = parse_headers(header or [], auth_key)
    flags = TlsFlags(tls, ca, cert, key)
    credentials = flags.credentials(settings.security)
    url = registry or settings.registry.resolved_url
    try:
        replies = asyncio.run(_call(url, name, method, text, timeout, metadata, credentials))
    except grpc.aio.AioRpcError as exc:
        hint = handshake_hint(exc.details() or "", flags.security(settings.security))
        typer.echo(f"ERROR:\n  Code: {exc.code().name}\n  Message: {exc.details()}", err=True)
        if hint:
            typer.echo(f"  Hint: {hint}", err=True)
        raise typer.Exit(1) from exc
    except MeshError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for reply in replies:
        typer.echo(reply)
