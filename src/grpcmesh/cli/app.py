"""The root typer application and what every command shares: where the registry is, TLS, output.

A command sees what a service sees: ``--config FILE`` reads the same YAML a service runs with
(registry, TLS files, auth key), and the same ``GRPCMESH_*`` environment overrides apply
(``GRPCMESH_REGISTRY``, ``GRPCMESH_REGISTRY_TYPE``/``_ADDRESS``, ``GRPCMESH_SECURITY_*``...),
with or without a file. ``--registry`` beats both.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import typer
from rich.console import Console

from grpcmesh.config import MeshConfig, SecurityConfig, load_config, parse_config
from grpcmesh.errors import ConfigError
from grpcmesh.security.tls import mesh_channel_credentials

app = typer.Typer(
    name="grpcmesh",
    help="Service discovery and inter-service communication for Python gRPC services.",
    no_args_is_help=True,
    add_completion=False,
)

RegistryOption = typer.Option(
    "--registry",
    "-r",
    help="Registry URL (memory://, sqlite:///path.db, etcd://host:port, consul://host:port). "
    "Default: the --config file's registry with GRPCMESH_* overrides (GRPCMESH_REGISTRY, "
    "GRPCMESH_REGISTRY_TYPE/_ADDRESS), else sqlite:// (the user's data dir).",
)

ConfigOption = typer.Option(
    "--config",
    "-c",
    help="A service's YAML config: use its registry, TLS files and auth key (GRPCMESH_* overrides apply).",
)

TlsOption = typer.Option("--tls/--no-tls", help="Dial instances over TLS (default: the config's tls_enabled).")
CaOption = typer.Option("--ca", help="CA bundle that verifies the servers (default: the config's ca_file).")
CertOption = typer.Option("--cert", help="Client certificate to present (mTLS; default: the config's cert_file).")
KeyOption = typer.Option("--key", help="Private key of --cert (default: the config's key_file).")


def cli_config(config: Path | None) -> MeshConfig:
    """The config a command runs with: ``config`` (or an empty one) with the environment's overrides."""
    if config is not None:
        return load_config(config)
    return parse_config({}, source="environment")


def registry_url(option: str | None, config: Path | None = None) -> str:
    """The registry URL a command uses: ``--registry``, else the config file/environment, else the default."""
    if option:
        return option
    try:
        return cli_config(config).registry.resolved_url
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


@dataclass(frozen=True)
class TlsFlags:
    """The TLS options a command was given (``None`` = take the config's)."""

    tls: bool | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def security(self, base: SecurityConfig) -> SecurityConfig:
        """``base`` with the flags applied; any file flag turns TLS on unless ``--no-tls``."""
        update: dict[str, object] = {}
        for field, value in (("ca_file", self.ca), ("cert_file", self.cert), ("key_file", self.key)):
            if value is not None:
                update[field] = value
        tls = self.tls if self.tls is not None else (True if update else base.tls_enabled)
        update["tls_enabled"] = tls
        return base.model_copy(update=update)

    def credentials(self, base: SecurityConfig) -> grpc.ChannelCredentials | None:
        try:
            return mesh_channel_credentials(self.security(base))
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None


def make_console() -> Console:
    """A console for tables: the terminal's width, or unlimited when piped (columns are never cut)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=100_000)


def add_missing_extra_command(name: str, extra: str, feature: str, missing: str) -> None:
    """Mount ``name`` as a command that only says which extra to install (its real one needs ``missing``)."""

    @app.command(
        name,
        help=f"{feature} (needs: pip install 'grpcmesh[{extra}]')",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    )
    def _explain(ctx: typer.Context) -> None:
        typer.echo(
            f"{feature} needs the '{extra}' extra ({missing} is not installed): pip install 'grpcmesh[{extra}]'",
            err=True,
        )
        raise typer.Exit(1)
