"""A plain gRPC client (no grpcmesh) that makes COUNT calls through xDS and reports each.

Prints ``STARTED``, then per call ``OK <instance_id> <key>`` or ``FAIL <code> <key>``, then
``DONE``. With HEADER and KEYS (comma-separated), call i carries ``HEADER: KEYS[i % len]``.
Optional SLEEP_MS between calls.

usage: policy_client.py TARGET COUNT [HEADER KEYS] [SLEEP_MS]
"""

import sys
import time

import echo_pb2
import echo_pb2_grpc
import grpc


def main() -> None:
    assert "grpcmesh" not in sys.modules, "the xDS client must not use grpcmesh"
    target, count = sys.argv[1], int(sys.argv[2])
    header = sys.argv[3] if len(sys.argv) > 4 else ""
    keys = sys.argv[4].split(",") if len(sys.argv) > 4 else ["-"]
    pause = float(sys.argv[5]) / 1000 if len(sys.argv) > 5 else 0.0
    with grpc.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(50):  # the first success: resources received, a connection up
            try:
                stub.Unary(echo_pb2.EchoRequest(message="warm-up"), timeout=30, wait_for_ready=True)
                break
            except grpc.RpcError:
                time.sleep(0.1)
        print("STARTED", flush=True)
        for i in range(count):
            key = keys[i % len(keys)]
            metadata = ((header, key),) if header else None
            try:
                reply = stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=10, metadata=metadata)
                print("OK", reply.instance_id, key, flush=True)
            except grpc.RpcError as exc:
                print("FAIL", exc.code().name, key, flush=True)
            if pause:
                time.sleep(pause)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
