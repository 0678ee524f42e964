"""The ``grpcmesh`` console script: checks for the ``[cli]`` extra before loading the CLI.

The command line needs typer and rich, which a core install does not have; without them the
script prints the one ``pip install`` line to run instead of a traceback.
"""

from __future__ import annotations

import sys

from grpcmesh._extras import require
from grpcmesh.errors import MissingExtraError


def main() -> None:
    """Console-script entry point."""
    try:
        require("typer", "cli", "the grpcmesh command line")
        require("rich", "cli", "the grpcmesh command line")
    except MissingExtraError as exc:
        print(f"grpcmesh: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    from grpcmesh.cli import main as cli_main

    cli_main()
