"""``grpcmesh demo``: the shop example on the embedded registry with a live view (see :mod:`grpcmesh.demo`)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from grpcmesh.cli.app import app
from grpcmesh.errors import MeshError


@app.command("demo")
def demo_command(
    seconds: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds of traffic (default: $DEMO_SECONDS, else run until Ctrl-C)."),
    ] = None,
    chaos: Annotated[bool, typer.Option(help="SIGKILL an instance now and then and start a replacement.")] = True,
    rate: Annotated[float, typer.Option(min=0.1, max=200, help="Traffic operations per second.")] = 8.0,
    instances: Annotated[int, typer.Option(min=1, max=5, help="Instances per service.")] = 2,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the registry, data and logs here (default: a temporary directory).")
    ] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Also write the summary to this file as JSON.")] = None,
    dashboard: Annotated[bool, typer.Option(help="Also serve the web dashboard (see --dashboard-port).")] = False,
    dashboard_port: Annotated[int, typer.Option(min=0, max=65535, help="Dashboard port on 127.0.0.1.")] = 8080,
) -> None:
    """Run the example shop (user, order, payment, notification services) with traffic, chaos and a live view."""
    from grpcmesh.demo import DemoOptions, run_demo  # rich/aiohttp-heavy; only when the command runs

    if seconds is None and os.environ.get("DEMO_SECONDS"):
        try:
            seconds = float(os.environ["DEMO_SECONDS"])
        except ValueError:
            raise typer.BadParameter(
                f"DEMO_SECONDS={os.environ['DEMO_SECONDS']!r} is not a number of seconds"
            ) from None
    if seconds is not None and seconds <= 0:
        raise typer.BadParameter(f"{seconds:g} must be a positive number of seconds", param_hint="--seconds")
    options = DemoOptions(
        seconds=seconds,
        chaos=chaos,
        rate=rate,
        instances=instances,
        workdir=workdir,
        dashboard_port=dashboard_port if dashboard else None,
    )
    console = Console()
    try:
        summary = asyncio.run(run_demo(options, console))
    except MeshError as exc:
        console.print(Text.assemble(("demo failed: ", "red"), str(exc)))
        raise typer.Exit(1) from exc
    console.print()
    for line in summary.lines():
        console.print(line, highlight=False, markup=False)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary.to_json(), indent=2))
