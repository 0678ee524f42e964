"""Helpers for testing services built on grpcmesh (and for grpcmesh's own tests and benchmarks)."""

from grpcmesh.testing.echo import EchoServicer, start_echo_server

__all__ = ["EchoServicer", "start_echo_server"]
