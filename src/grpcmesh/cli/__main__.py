"""``python -m grpcmesh.cli``."""

from grpcmesh.cli import main

main()
