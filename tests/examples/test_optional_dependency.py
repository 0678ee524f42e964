"""An optional dependency that is down costs its callers nothing (issue 15's fail-fast).

user-service creates a welcome order in order-service (optional). With order-service
registered nowhere, CreateUser used to wait out its whole 2 s order timeout on every call;
now the mesh answers UNAVAILABLE at once and the user is created straight away.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
from shop.order.v1 import order_pb2_grpc
from shop.storage import Database
from shop.user.repository import SCHEMA as USER_SCHEMA
from shop.user.repository import UserRepository
from shop.user.service import UserService
from shop.user.v1 import user_pb2, user_pb2_grpc

from grpcmesh import open_registry
from grpcmesh.client import MeshChannel


async def test_create_user_does_not_wait_for_a_missing_optional_order_service(tmp_path: Path) -> None:
    db = Database(tmp_path / "user-service.db", USER_SCHEMA)
    async with open_registry(f"memory://{uuid.uuid4().hex}") as registry:
        orders_channel = MeshChannel(registry, "order-service", version="v1")
        server = grpc.aio.server()
        users = UserService(UserRepository(db), order_pb2_grpc.OrderServiceStub(orders_channel))
        user_pb2_grpc.add_UserServiceServicer_to_server(users, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = user_pb2_grpc.UserServiceStub(channel)
                started = time.monotonic()
                reply = await stub.CreateUser(
                    user_pb2.CreateUserRequest(name="Ann", email="ann@example.com"), timeout=10
                )
                elapsed = time.monotonic() - started
            assert reply.user.id
            assert reply.initial_order_id == ""  # no welcome order: order-service is down
            # It used to take the full 2 s order timeout; 1.5 s leaves a wide margin on a loaded machine.
            assert elapsed < 1.5
            assert orders_channel.stats().no_endpoint_errors == 1  # asked once, not retried
        finally:
            await server.stop(None)
            await orders_channel.close()
            await db.close()
