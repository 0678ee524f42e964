"""Run one shop service exactly as a grpcmesh user would: config -> Mesh -> server -> servicer -> serve."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc

import grpcmesh
from shop.notification.repository import SCHEMA as NOTIFICATION_SCHEMA
from shop.notification.repository import NotificationRepository
from shop.notification.service import NotificationService
from shop.notification.v1 import notification_pb2_grpc
from shop.order.repository import SCHEMA as ORDER_SCHEMA
from shop.order.repository import OrderRepository
from shop.order.service import OrderService
from shop.order.v1 import order_pb2_grpc
from shop.payment.repository import SCHEMA as PAYMENT_SCHEMA
from shop.payment.repository import PaymentRepository
from shop.payment.service import PaymentService
from shop.payment.v1 import payment_pb2_grpc
from shop.storage import Database, database_path
from shop.user.repository import SCHEMA as USER_SCHEMA
from shop.user.repository import UserRepository
from shop.user.service import UserService
from shop.user.v1 import user_pb2_grpc

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

Wiring = Callable[[grpcmesh.Mesh, Database, grpc.aio.Server], None]


def _user(mesh: grpcmesh.Mesh, db: Database, server: grpc.aio.Server) -> None:
    orders = order_pb2_grpc.OrderServiceStub(mesh.channel("order-service"))
    user_pb2_grpc.add_UserServiceServicer_to_server(UserService(UserRepository(db), orders), server)


def _order(mesh: grpcmesh.Mesh, db: Database, server: grpc.aio.Server) -> None:
    servicer = OrderService(
        OrderRepository(db),
        user_pb2_grpc.UserServiceStub(mesh.channel("user-service")),
        payment_pb2_grpc.PaymentServiceStub(mesh.channel("payment-service")),
        notification_pb2_grpc.NotificationServiceStub(mesh.channel("notification-service")),
    )
    order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)


def _payment(mesh: grpcmesh.Mesh, db: Database, server: grpc.aio.Server) -> None:
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentService(PaymentRepository(db)), server)


def _notification(mesh: grpcmesh.Mesh, db: Database, server: grpc.aio.Server) -> None:
    servicer = NotificationService(NotificationRepository(db))
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, server)


SERVICES: dict[str, tuple[str, Wiring]] = {
    "user-service": (USER_SCHEMA, _user),
    "order-service": (ORDER_SCHEMA, _order),
    "payment-service": (PAYMENT_SCHEMA, _payment),
    "notification-service": (NOTIFICATION_SCHEMA, _notification),
}


async def serve(name: str, config: Path | None = None) -> None:
    """Serve ``name`` until SIGTERM/SIGINT (then the server drains and deregisters)."""
    if name not in SERVICES:
        raise SystemExit(f"unknown shop service {name!r}; choose one of {', '.join(SERVICES)}")
    schema, wire = SERVICES[name]
    async with grpcmesh.Mesh.from_config(config or CONFIG_DIR / f"{name}.yaml") as mesh:
        db = Database(database_path(name), schema)
        try:
            server = mesh.server()
            wire(mesh, db, server.grpc)
            await server.serve()
        finally:
            await db.close()
