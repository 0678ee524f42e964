"""The shop's business logic over real gRPC: all four servicers on one 127.0.0.1 server.

The servicers get their downstream stubs injected, so here they call each other over a
plain channel to this one server; the demo and the end-to-end tests wire them through the
mesh instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from shop.notification.repository import SCHEMA as NOTIFICATION_SCHEMA
from shop.notification.repository import NotificationRepository
from shop.notification.service import NotificationService
from shop.notification.v1 import notification_pb2, notification_pb2_grpc
from shop.order.repository import SCHEMA as ORDER_SCHEMA
from shop.order.repository import OrderRepository
from shop.order.service import OrderService
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.payment.repository import SCHEMA as PAYMENT_SCHEMA
from shop.payment.repository import PaymentRepository
from shop.payment.service import MAX_CHARGE_CENTS, PaymentService
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.storage import Database
from shop.user.repository import SCHEMA as USER_SCHEMA
from shop.user.repository import UserRepository
from shop.user.service import UserService
from shop.user.v1 import user_pb2, user_pb2_grpc


@dataclass
class Shop:
    users: user_pb2_grpc.UserServiceAsyncStub
    orders: order_pb2_grpc.OrderServiceAsyncStub
    payments: payment_pb2_grpc.PaymentServiceAsyncStub
    notifications: notification_pb2_grpc.NotificationServiceAsyncStub


async def start_shop(
    data: Path, *, with_notifications: bool = True
) -> tuple[grpc.aio.Server, grpc.aio.Channel, Shop, list[Database]]:
    dbs = [
        Database(data / "user-service.db", USER_SCHEMA),
        Database(data / "order-service.db", ORDER_SCHEMA),
        Database(data / "payment-service.db", PAYMENT_SCHEMA),
        Database(data / "notification-service.db", NOTIFICATION_SCHEMA),
    ]
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    shop = Shop(
        user_pb2_grpc.UserServiceStub(channel),
        order_pb2_grpc.OrderServiceStub(channel),
        payment_pb2_grpc.PaymentServiceStub(channel),
        notification_pb2_grpc.NotificationServiceStub(channel),
    )
    user_pb2_grpc.add_UserServiceServicer_to_server(UserService(UserRepository(dbs[0]), shop.orders), server)
    order_pb2_grpc.add_OrderServiceServicer_to_server(
        OrderService(OrderRepository(dbs[1]), shop.users, shop.payments, shop.notifications, call_timeout=1.0), server
    )
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentService(PaymentRepository(dbs[2])), server)
    if with_notifications:
        notification_pb2_grpc.add_NotificationServiceServicer_to_server(
            NotificationService(NotificationRepository(dbs[3])), server
        )
    await server.start()
    return server, channel, shop, dbs


async def stop_shop(server: grpc.aio.Server, channel: grpc.aio.Channel, dbs: list[Database]) -> None:
    await channel.close()
    await server.stop(None)
    for db in dbs:
        await db.close()


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    server, channel, shop, dbs = await start_shop(tmp_path)
    yield shop
    await stop_shop(server, channel, dbs)


ITEMS = [
    order_pb2.OrderItem(sku="sku-mug", name="Mug", quantity=2, unit_price_cents=1299),
    order_pb2.OrderItem(sku="sku-tee", name="T-shirt", quantity=1, unit_price_cents=2499),
]


async def test_create_user_makes_a_welcome_order(shop: Shop) -> None:
    reply = await shop.users.CreateUser(user_pb2.CreateUserRequest(name="Ada", email="Ada@Example.com"))
    assert reply.user.id.startswith("usr_")
    assert reply.user.email == "ada@example.com"
    assert reply.initial_order_id
    welcome = (await shop.orders.GetOrder(order_pb2.GetOrderRequest(id=reply.initial_order_id))).order
    assert welcome.user_id == reply.user.id
    assert welcome.status == order_pb2.ORDER_STATUS_PENDING
    assert welcome.total_cents == 0
    got = await shop.users.GetUser(user_pb2.GetUserRequest(id=reply.user.id))
    assert got.user == reply.user


async def test_order_is_charged_and_the_user_told(shop: Shop) -> None:
    user = (await shop.users.CreateUser(user_pb2.CreateUserRequest(name="Bob", email="bob@example.com"))).user
    reply = await shop.orders.CreateOrder(order_pb2.CreateOrderRequest(user_id=user.id, items=ITEMS))
    order = reply.order
    assert reply.order_id == order.id
    assert order.total_cents == 2 * 1299 + 2499
    assert order.currency == "EUR"
    assert order.status == order_pb2.ORDER_STATUS_PAID
    payment = (await shop.payments.GetPayment(payment_pb2.GetPaymentRequest(id=order.payment_id))).payment
    assert payment.amount_cents == order.total_cents
    assert payment.order_id == order.id
    assert payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
    sent = await shop.notifications.ListNotifications(notification_pb2.ListNotificationsRequest(user_id=user.id))
    assert any(order.id in n.subject and "paid" in n.subject for n in sent.notifications)
    listed = await shop.orders.ListOrders(order_pb2.ListOrdersRequest(user_id=user.id))
    assert order.id in [o.id for o in listed.orders]


async def test_big_order_is_declined_not_failed(shop: Shop) -> None:
    user = (await shop.users.CreateUser(user_pb2.CreateUserRequest(name="Cy", email="cy@example.com"))).user
    item = order_pb2.OrderItem(sku="sku-piano", name="Piano", quantity=1, unit_price_cents=MAX_CHARGE_CENTS + 1)
    order = (await shop.orders.CreateOrder(order_pb2.CreateOrderRequest(user_id=user.id, items=[item]))).order
    assert order.status == order_pb2.ORDER_STATUS_PAYMENT_DECLINED
    payment = (await shop.payments.GetPayment(payment_pb2.GetPaymentRequest(id=order.payment_id))).payment
    assert payment.status == payment_pb2.PAYMENT_STATUS_DECLINED
    assert "limit" in payment.decline_reason


async def test_order_for_unknown_user_fails_precondition(shop: Shop) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(order_pb2.CreateOrderRequest(user_id="usr_nobody", items=ITEMS))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "usr_nobody" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (order_pb2.CreateOrderRequest(items=ITEMS), "user_id"),
        (order_pb2.CreateOrderRequest(user_id="u", currency="euro"), "currency"),
        (
            order_pb2.CreateOrderRequest(user_id="u", items=[order_pb2.OrderItem(sku="s", quantity=0)]),
            "items[0].quantity",
        ),
    ],
)
async def test_bad_order_names_the_field(shop: Shop, request_: order_pb2.CreateOrderRequest, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}:")


async def test_bad_user_input_and_duplicate_email(shop: Shop) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.users.CreateUser(user_pb2.CreateUserRequest(name="Dee", email="not-an-email"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "email:" in (caught.value.details() or "")
    await shop.users.CreateUser(user_pb2.CreateUserRequest(name="Dee", email="dee@example.com"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.users.CreateUser(user_pb2.CreateUserRequest(name="Dee 2", email="DEE@example.com"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_idempotency_keys_prevent_duplicates(shop: Shop) -> None:
    first = await shop.users.CreateUser(
        user_pb2.CreateUserRequest(name="Eve", email="eve@example.com", idempotency_key="k-user")
    )
    again = await shop.users.CreateUser(
        user_pb2.CreateUserRequest(name="Eve", email="eve@example.com", idempotency_key="k-user")
    )
    assert again.user.id == first.user.id
    assert again.initial_order_id == first.initial_order_id
    request = order_pb2.CreateOrderRequest(user_id=first.user.id, items=ITEMS, idempotency_key="k-order")
    order = (await shop.orders.CreateOrder(request)).order
    assert (await shop.orders.CreateOrder(request)).order.id == order.id
    charge = payment_pb2.ChargeRequest(idempotency_key="k-pay", order_id="o1", user_id="u1", amount_cents=500)
    paid = await shop.payments.Charge(charge)
    replay = await shop.payments.Charge(charge)
    assert not paid.replayed
    assert replay.replayed
    assert replay.payment.id == paid.payment.id
    charge.amount_cents = 600
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.payments.Charge(charge)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_notifications_are_optional_for_orders(tmp_path: Path) -> None:
    server, channel, shop, dbs = await start_shop(tmp_path, with_notifications=False)
    try:
        user = (await shop.users.CreateUser(user_pb2.CreateUserRequest(name="Fay", email="fay@example.com"))).user
        order = (await shop.orders.CreateOrder(order_pb2.CreateOrderRequest(user_id=user.id, items=ITEMS))).order
        assert order.status == order_pb2.ORDER_STATUS_PAID
    finally:
        await stop_shop(server, channel, dbs)


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    server, channel, shop, dbs = await start_shop(tmp_path)
    try:
        user = (await shop.users.CreateUser(user_pb2.CreateUserRequest(name="Gus", email="gus@example.com"))).user
        order = (await shop.orders.CreateOrder(order_pb2.CreateOrderRequest(user_id=user.id, items=ITEMS))).order
    finally:
        await stop_shop(server, channel, dbs)
    server, channel, shop, dbs = await start_shop(tmp_path)
    try:
        assert (await shop.users.GetUser(user_pb2.GetUserRequest(id=user.id))).user == user
        assert (await shop.orders.GetOrder(order_pb2.GetOrderRequest(id=order.id))).order == order
    finally:
        await stop_shop(server, channel, dbs)
