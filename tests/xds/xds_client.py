"""A plain gRPC client that knows nothing of grpcmesh: grpcio, its own Echo stubs, a bootstrap.

Run as a child process (``GRPC_XDS_BOOTSTRAP`` is read once per process). It calls
``Unary`` on TARGET in a loop and prints one line per call, ``OK <instance_id>`` or
``FAIL <status>``, until SECONDS have passed or it is terminated.

usage: xds_client.py TARGET SECONDS
"""

import sys
import time

import echo_pb2
import echo_pb2_grpc
import grpc


def main() -> None:
    target, seconds = sys.argv[1], float(sys.argv[2])
    assert "grpcmesh" not in sys.modules, "the xDS client must not use grpcmesh"
    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        print("STARTED", flush=True)
        while time.monotonic() < deadline:
            try:
                reply = stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=10, wait_for_ready=True)
                print("OK", reply.instance_id, flush=True)
            except grpc.RpcError as exc:
                print("FAIL", exc.code().name, (exc.details() or "").replace("\n", " "), flush=True)
            time.sleep(0.01)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
