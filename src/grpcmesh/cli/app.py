"""The root typer application and options shared by every command."""

from __future__ import annotations

import os

import typer

app = typer.Typer(
    name="grpcmesh",
    help="Service discovery and inter-service communication for Python gRPC services.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_REGISTRY = "sqlite://"

RegistryOption = typer.Option(
    "--registry",
    "-r",
    help="Registry URL (memory://, sqlite:///path.db, etcd://host:port, consul://host:port). "
    "Default: $GRPCMESH_REGISTRY, else sqlite:// (the user's data dir).",
)


def registry_url(option: str | None) -> str:
    """The registry URL a command should use: the option, then $GRPCMESH_REGISTRY, then the default."""
    return option or os.environ.get("GRPCMESH_REGISTRY") or DEFAULT_REGISTRY
