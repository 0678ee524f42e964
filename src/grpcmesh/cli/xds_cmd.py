"""``grpcmesh xds serve`` and ``grpcmesh xds bootstrap``: the registry as an xDS control plane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from grpcmesh.cli.app import ConfigOption, RegistryOption, cli_config, registry_url
from grpcmesh.config.models import SecurityConfig
from grpcmesh.errors import MeshError
from grpcmesh.xds import DEFAULT_NODE_ID, XdsServer, bootstrap_json, serve_xds
from grpcmesh.xds.policy import XdsPolicies

xds_app = typer.Typer(
    help="Serve the registry over xDS so gRPC clients in any language can dial xds:///NAME.",
    no_args_is_help=True,
)

DEFAULT_PORT = 18000


def _announce(server: XdsServer) -> None:
    typer.echo(f"xDS control plane listening on {server.address}")
    typer.echo(f"  clients: grpcmesh xds bootstrap --server {server.address} > bootstrap.json")
    typer.echo("           GRPC_XDS_BOOTSTRAP=bootstrap.json, then dial xds:///SERVICE-NAME")


async def _serve_until_signalled(
    url: str, host: str, port: int, policies: XdsPolicies | None, security: SecurityConfig | None
) -> None:
    """Serve until SIGTERM/SIGINT, then stop cleanly (streams ended, registry closed)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve_xds(url, host, port, on_ready=_announce, policies=policies, security=security)


@xds_app.command("serve")
def serve_command(
    registry: Annotated[str | None, RegistryOption] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on (0 picks a free one).")] = DEFAULT_PORT,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every stream and NACK.")] = False,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="xDS policy file: per-service split/fault/balancing..., limits.")
    ] = None,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Run an ADS server (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment) fed by the registry."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        url = registry_url(registry, config)
        policies = XdsPolicies.from_yaml(policy) if policy is not None else None
        security = cli_config(config).security
        asyncio.run(_serve_until_signalled(url, host, port, policies, security))
    except MeshError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except KeyboardInterrupt:
        pass


@xds_app.command("bootstrap")
def bootstrap_command(
    server: Annotated[str, typer.Option("--server", "-s", help="The control plane's HOST:PORT.")] = (
        f"127.0.0.1:{DEFAULT_PORT}"
    ),
    node_id: Annotated[str, typer.Option(help="Names this client in the control plane's logs.")] = DEFAULT_NODE_ID,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")] = None,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Print the JSON file that GRPC_XDS_BOOTSTRAP points to (tls channel_creds when the config enables TLS)."""
    try:
        security = cli_config(config).security
        text = bootstrap_json(server, node_id=node_id, security=security)
    except MeshError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
