"""A plain grpcio server that knows nothing of grpcmesh: Echo and the standard health service.

Prints ``PORT <n>`` once serving; each stdin line ``SERVING`` / ``NOT_SERVING`` sets the
overall health status (answered with ``OK``); end of stdin stops the server.

usage: plain_server.py INSTANCE_ID
"""

import sys
from concurrent import futures

import echo_pb2
import echo_pb2_grpc
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class Echo(echo_pb2_grpc.EchoServicer):
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    def Unary(self, request, context):  # type: ignore[no-untyped-def]
        return echo_pb2.EchoReply(message=request.message, instance_id=self.instance_id)


def main() -> None:
    assert "grpcmesh" not in sys.modules, "the plain server must not use grpcmesh"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    status = health.HealthServicer()
    status.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(sys.argv[1]), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT", port, flush=True)
    for line in sys.stdin:
        wanted = line.strip()
        if wanted in ("SERVING", "NOT_SERVING"):
            status.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(wanted))
        print("OK", flush=True)
    server.stop(None)


if __name__ == "__main__":
    main()
