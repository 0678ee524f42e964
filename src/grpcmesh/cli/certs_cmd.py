"""``grpcmesh certs dev``: a development CA and one certificate per service, for TLS and mTLS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpcmesh.cli.app import app
from grpcmesh.errors import MeshError
from grpcmesh.security.certs import generate_dev_certs

certs_app = typer.Typer(help="Certificates for TLS / mTLS between services.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")


@certs_app.command("dev")
def dev_command(
    services: Annotated[list[str], typer.Argument(help="Service names to issue certificates for.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the PEM files into.")] = Path("certs"),
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
) -> None:
    """Create a dev CA (ca.pem) and <service>.pem / <service>-key.pem for each service (not for production)."""
    try:
        created = generate_dev_certs(out, services, valid_days=days)
    except MeshError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"CA: {created.ca_file}")
    for name, cert in created.services.items():
        typer.echo(f"{name}: cert_file={cert.cert_file} key_file={cert.key_file}")
