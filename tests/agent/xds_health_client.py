"""A plain grpcio client (no grpcmesh): one ``Health/Check`` through ``xds:///NAME``.

usage: GRPC_XDS_BOOTSTRAP=... xds_health_client.py xds:///NAME
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> None:
    assert "grpcmesh" not in sys.modules, "the xDS client must not use grpcmesh"
    with grpc.insecure_channel(sys.argv[1]) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True
        )
    print("STATUS", health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), flush=True)


if __name__ == "__main__":
    main()
