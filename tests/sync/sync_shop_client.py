"""A synchronous grpcio client of the shop (no grpcmesh): creates a user and an order over xds:///.

Prints ``ORDER <order_id> <status name> <payment_id>``.

usage: GRPC_XDS_BOOTSTRAP=... PYTHONPATH=examples/shop sync_shop_client.py SERVICE_KEY
"""

import sys
import uuid

import grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc


def main() -> None:
    assert "grpcmesh" not in sys.modules, "the sync client must not use grpcmesh"
    key = (("x-service-key", sys.argv[1]),)
    with grpc.insecure_channel("xds:///user-service") as users, grpc.insecure_channel("xds:///order-service") as orders:
        created = user_pb2_grpc.UserServiceStub(users).CreateUser(
            user_pb2.CreateUserRequest(name="Sync Client", email=f"{uuid.uuid4().hex}@example.com"),
            metadata=key,
            timeout=30,
            wait_for_ready=True,
        )
        item = order_pb2.OrderItem(sku="sku-1", name="book", quantity=2, unit_price_cents=1250)
        reply = order_pb2_grpc.OrderServiceStub(orders).CreateOrder(
            order_pb2.CreateOrderRequest(user_id=created.user.id, items=[item], idempotency_key=uuid.uuid4().hex),
            metadata=key,
            timeout=30,
            wait_for_ready=True,
        )
    status = order_pb2.OrderStatus.Name(reply.order.status)
    print("ORDER", reply.order_id, status, reply.order.payment_id, flush=True)


if __name__ == "__main__":
    main()
