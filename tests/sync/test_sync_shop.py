"""Synchronous grpcio in the shop: a sync payment-service and a sync client take part in its calls.

payment-service is a thread-pool ``grpc.server`` registered with ``SyncMeshServer`` behind the
sync auth/metrics/logging interceptors; user-, order- and notification-service are the shop's
own grpc.aio servicers on mesh servers; a sync grpcio client (a child process with only a
bootstrap file) creates a user and an order through ``xds:///``. The order is charged by the
sync server, called by order-service through ``mesh.channel``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from shop.notification.repository import SCHEMA as NOTIFICATION_SCHEMA
from shop.notification.repository import NotificationRepository
from shop.notification.service import NotificationService
from shop.notification.v1 import notification_pb2_grpc
from shop.order.repository import SCHEMA as ORDER_SCHEMA
from shop.order.repository import OrderRepository
from shop.order.service import OrderService
from shop.order.v1 import order_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.storage import Database
from shop.user.repository import SCHEMA as USER_SCHEMA
from shop.user.repository import UserRepository
from shop.user.service import UserService
from shop.user.v1 import user_pb2_grpc

from grpcmesh import Mesh, open_registry
from grpcmesh.config.models import MeshConfig, SecurityConfig
from grpcmesh.errors import UnknownSchemeError
from grpcmesh.model import HealthStatus
from grpcmesh.sync import SyncAuthInterceptor, SyncLoggingInterceptor, SyncMeshServer, SyncMetricsInterceptor
from grpcmesh.sync.server import thread_pool
from grpcmesh.xds import XdsServer
from tests.helpers import ROOT, read_line_with, stop_process

pytestmark = pytest.mark.slow

KEY = "sync-test-service-key-0123456789"


class SyncPayments(payment_pb2_grpc.PaymentServiceServicer):
    """A synchronous payment-service: approves every charge (once per idempotency key)."""

    def __init__(self) -> None:
        self.charges: dict[str, payment_pb2.Payment] = {}
        self.lock = threading.Lock()

    def Charge(self, request: payment_pb2.ChargeRequest, context: grpc.ServicerContext) -> payment_pb2.ChargeResponse:
        with self.lock:
            known = self.charges.get(request.idempotency_key)
            if known is not None:
                return payment_pb2.ChargeResponse(payment=known, replayed=True)
            payment = payment_pb2.Payment(
                id=f"pay-{uuid.uuid4().hex[:8]}",
                idempotency_key=request.idempotency_key,
                order_id=request.order_id,
                user_id=request.user_id,
                amount_cents=request.amount_cents,
                currency=request.currency,
                status=payment_pb2.PAYMENT_STATUS_SUCCEEDED,
            )
            self.charges[request.idempotency_key] = payment
            return payment_pb2.ChargeResponse(payment=payment)


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def sync_payments(registry_url: str) -> Iterator[tuple[SyncMeshServer, SyncPayments, CollectorRegistry]]:
    metrics = CollectorRegistry()
    interceptors = [
        SyncLoggingInterceptor(),
        SyncMetricsInterceptor(metrics, "payment-service"),
        SyncAuthInterceptor(KEY),
    ]
    server = grpc.server(thread_pool(8), interceptors=interceptors)
    payments = SyncPayments()
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(payments, server)
    with SyncMeshServer(server, "payment-service", registry_url, version="v1", propagation_delay=0.2) as mesh_server:
        yield mesh_server, payments, metrics


async def test_sync_client_and_sync_server_take_part_in_the_shop(
    registry_url: str,
    sync_payments: tuple[SyncMeshServer, SyncPayments, CollectorRegistry],
    tmp_path: Path,
) -> None:
    sync_server, payments, metrics = sync_payments
    assert sync_server.instance is not None
    assert sync_server.instance.health is HealthStatus.SERVING

    config = MeshConfig(security=SecurityConfig(service_auth_key=KEY))
    dbs = [
        Database(tmp_path / "user.db", USER_SCHEMA),
        Database(tmp_path / "order.db", ORDER_SCHEMA),
        Database(tmp_path / "notification.db", NOTIFICATION_SCHEMA),
    ]
    async with Mesh(registry_url, config=config) as mesh:
        users = mesh.server("user-service", port=0, version="v1", dependencies=[], propagation_delay=0.1)
        orders_stub = order_pb2_grpc.OrderServiceStub(mesh.channel("order-service"))
        user_pb2_grpc.add_UserServiceServicer_to_server(UserService(UserRepository(dbs[0]), orders_stub), users.grpc)
        orders = mesh.server("order-service", port=0, version="v1", dependencies=[], propagation_delay=0.1)
        order_servicer = OrderService(
            OrderRepository(dbs[1]),
            user_pb2_grpc.UserServiceStub(mesh.channel("user-service")),
            payment_pb2_grpc.PaymentServiceStub(mesh.channel("payment-service")),
            notification_pb2_grpc.NotificationServiceStub(mesh.channel("notification-service")),
        )
        order_pb2_grpc.add_OrderServiceServicer_to_server(order_servicer, orders.grpc)
        notes = mesh.server("notification-service", port=0, version="v1", dependencies=[], propagation_delay=0.1)
        servicer = NotificationService(NotificationRepository(dbs[2]))
        notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, notes.grpc)
        for server in (users, orders, notes):
            await server.start()

        async with XdsServer(mesh.registry) as plane:
            bootstrap = tmp_path / "bootstrap.json"
            bootstrap.write_text(plane.bootstrap_json(node_id="sync-shop-client"))
            env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_XDS")}
            env.update(GRPC_XDS_BOOTSTRAP=str(bootstrap), PYTHONPATH=str(ROOT / "examples" / "shop"))
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).with_name("sync_shop_client.py")),
                KEY,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            try:
                line = await read_line_with(client, "ORDER", timeout=60)
            finally:
                await stop_process(client)

    for db in dbs:
        await db.close()
    _, order_id, status, payment_id = line.split()
    assert status == "ORDER_STATUS_PAID", line
    (payment,) = payments.charges.values()
    assert (payment.id, payment.order_id) == (payment_id, order_id)
    handled = metrics.get_sample_value(
        "grpc_server_handled_total",
        {
            "grpc_service": "shop.payment.v1.PaymentService",
            "grpc_method": "Charge",
            "grpc_type": "unary",
            "grpc_code": "OK",
        },
    )
    assert handled is not None
    assert handled >= 1


def test_sync_server_refuses_calls_without_the_key_and_deregisters_on_stop(registry_url: str) -> None:
    server = grpc.server(thread_pool(4), interceptors=[SyncAuthInterceptor(KEY)])
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(SyncPayments(), server)
    mesh_server = SyncMeshServer(server, "payment-service", registry_url, propagation_delay=0.1)
    port = mesh_server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Charge(payment_pb2.ChargeRequest(idempotency_key="k"), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = stub.Charge(payment_pb2.ChargeRequest(idempotency_key="k"), metadata=(("x-service-key", KEY),))
            assert reply.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
    finally:
        mesh_server.stop()

    async def registered() -> list[Any]:
        async with open_registry(registry_url) as registry:
            return await registry.get_service("payment-service")

    assert asyncio.run(registered()) == []


def test_sync_server_that_cannot_register_stops_what_it_started() -> None:
    server = grpc.server(thread_pool(2))
    mesh_server = SyncMeshServer(server, "payment-service", "no-such-backend://registry")
    with pytest.raises(UnknownSchemeError):
        mesh_server.start()
    assert not [t for t in threading.enumerate() if t.name == "grpcmesh-sync-payment-service"]
    address = f"127.0.0.1:{mesh_server.port}"
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=1)
