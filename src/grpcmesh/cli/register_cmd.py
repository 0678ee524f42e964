"""``grpcmesh register NAME HOST:PORT``: put a service not written with grpcmesh into the mesh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer

from grpcmesh.agent import RegistrationAgent, agent_instance_id
from grpcmesh.cli.app import RegistryOption, app, registry_url
from grpcmesh.errors import ConfigError, MeshError
from grpcmesh.model import DEFAULT_WEIGHT, ServiceInstance
from grpcmesh.registry import DEFAULT_TTL, open_registry
from grpcmesh.security.tls import client_credentials


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise typer.BadParameter(f"{target!r} is not HOST:PORT, e.g. 127.0.0.1:50051", param_hint="TARGET")
    return host, int(port)


def _parse_metadata(pairs: list[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        metadata[key] = value
    return metadata


def _from_config(option: str | None, config: Path | None) -> tuple[str, grpc.ChannelCredentials | None]:
    """The registry URL (the option wins) and, when the config enables TLS, credentials to reach the target."""
    if config is None:
        return registry_url(option), None
    from grpcmesh.config.loader import load_config

    loaded = load_config(config)
    url = registry_url(option) if option is not None else loaded.registry.resolved_url
    security = loaded.security
    if not security.tls_enabled:
        return url, None
    if security.ca_file is None:
        raise ConfigError("security.ca_file: following a TLS target's health needs the CA that signs its certificate")
    return url, client_credentials(security.ca_file, security.cert_file, security.key_file)


async def _run(url: str, instance: ServiceInstance, **options: Any) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    async with open_registry(url) as registry:
        agent = RegistrationAgent(registry, instance, **options)
        await agent.start()
        typer.echo(f"registered {agent.instance.name} ({agent.instance.id}) at {agent.instance.target}")
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        finally:
            await agent.stop()
            typer.echo(f"deregistered {agent.instance.id}")


@app.command("register")
def register_command(
    name: Annotated[str, typer.Argument(help="Service name, e.g. user-service.")],
    target: Annotated[str, typer.Argument(help="HOST:PORT where the service listens.")],
    version: Annotated[str, typer.Option(help="Version label (for version filters and canary splits).")] = "",
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", "-m", help="KEY=VALUE instance metadata (repeatable).")
    ] = None,
    weight: Annotated[int, typer.Option(help="Relative share of traffic.")] = DEFAULT_WEIGHT,
    registry: Annotated[str | None, RegistryOption] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="A grpcmesh config: its registry, and its security section to reach a TLS target."
        ),
    ] = None,
    health_service: Annotated[
        str, typer.Option(help='grpc.health.v1 service name to follow ("" = the server overall).')
    ] = "",
    ttl: Annotated[float, typer.Option(help="Seconds the entry outlives the agent if it dies.")] = DEFAULT_TTL,
    check_interval: Annotated[float, typer.Option(help="Seconds between health polls / reconnects.")] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every health change.")] = False,
) -> None:
    """Register a service written in any language and mirror its grpc.health.v1 status until stopped."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    host, port = _split_target(target)
    try:
        url, credentials = _from_config(registry, config)
        instance = ServiceInstance(
            name=name,
            id=agent_instance_id(name, host, port),
            address=host,
            port=port,
            version=version,
            metadata=_parse_metadata(metadata or []),
            weight=weight,
        )
        options = {"health_service": health_service, "ttl": ttl, "check_interval": check_interval}
        asyncio.run(_run(url, instance, credentials=credentials, **options))
    except MeshError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except KeyboardInterrupt:
        pass
