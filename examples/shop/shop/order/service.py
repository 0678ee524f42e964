"""The OrderService servicer: validate the buyer, store the order, charge it, tell the buyer."""

from __future__ import annotations

import logging

import grpc

from grpcmesh import MeshError
from shop.notification.v1 import notification_pb2, notification_pb2_grpc
from shop.order.repository import OrderRepository
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.retry import retry_idempotent
from shop.rpc import CURRENCY_RE, budget, not_found, reject
from shop.user.v1 import user_pb2, user_pb2_grpc

log = logging.getLogger("shop.order")

Context = grpc.aio.ServicerContext[object, object]

MAX_ITEMS = 100
MAX_QUANTITY = 1000
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class OrderService(order_pb2_grpc.OrderServiceServicer):
    """order-service: user-service and payment-service are required, notification-service optional."""

    def __init__(
        self,
        orders: OrderRepository,
        users: user_pb2_grpc.UserServiceAsyncStub,
        payments: payment_pb2_grpc.PaymentServiceAsyncStub,
        notifications: notification_pb2_grpc.NotificationServiceAsyncStub,
        *,
        call_timeout: float = 2.0,
    ) -> None:
        self._orders = orders
        self._users = users
        self._payments = payments
        self._notifications = notifications
        self._timeout = call_timeout

    async def CreateOrder(
        self, request: order_pb2.CreateOrderRequest, context: Context
    ) -> order_pb2.CreateOrderResponse:
        await self._validate(request, context)
        existing = await self._orders.find_by_key(request.idempotency_key)
        if existing is not None and not _needs_charge(existing):
            return order_pb2.CreateOrderResponse(order=existing, order_id=existing.id)
        await self._check_user(request.user_id, context)
        order, _ = await self._orders.create(
            request.user_id, request.items, request.currency or "EUR", request.idempotency_key
        )
        if _needs_charge(order):
            order = await self._charge(order, context)
        await self._notify(order, context)
        return order_pb2.CreateOrderResponse(order=order, order_id=order.id)

    async def _validate(self, request: order_pb2.CreateOrderRequest, context: Context) -> None:
        if not request.user_id:
            await reject(context, "user_id", "is required")
        if request.currency and not CURRENCY_RE.match(request.currency):
            await reject(context, "currency", f"{request.currency!r} is not an ISO 4217 code such as 'EUR'")
        if len(request.items) > MAX_ITEMS:
            await reject(context, "items", f"{len(request.items)} items; an order holds at most {MAX_ITEMS}")
        for index, item in enumerate(request.items):
            if not item.sku:
                await reject(context, f"items[{index}].sku", "is required")
            if not 1 <= item.quantity <= MAX_QUANTITY:
                await reject(context, f"items[{index}].quantity", f"{item.quantity} must be 1 to {MAX_QUANTITY}")
            if item.unit_price_cents < 0:
                await reject(context, f"items[{index}].unit_price_cents", "must not be negative")

    async def _check_user(self, user_id: str, context: Context) -> None:
        """user-service is required: an unknown user fails the order, and so does user-service being down."""
        try:
            request = user_pb2.GetUserRequest(id=user_id)
            await retry_idempotent(lambda t: self._users.GetUser(request, timeout=t), budget(context, self._timeout))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"user_id: user {user_id!r} does not exist")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"user-service could not check the user: {exc.code().name} {exc.details()}"
            )
        except MeshError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"user-service could not check the user: {exc}")

    async def _charge(self, order: order_pb2.Order, context: Context) -> order_pb2.Order:
        """Charge with the order id as idempotency key, so retrying a failed CreateOrder never charges twice."""
        request = payment_pb2.ChargeRequest(
            idempotency_key=f"order-{order.id}",
            order_id=order.id,
            user_id=order.user_id,
            amount_cents=order.total_cents,
            currency=order.currency,
        )
        try:
            reply = await retry_idempotent(
                lambda t: self._payments.Charge(request, timeout=t), budget(context, self._timeout)
            )
        except grpc.aio.AioRpcError as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"payment-service could not charge order {order.id} (still pending; retry with the same "
                f"idempotency_key): {exc.code().name} {exc.details()}",
            )
        except MeshError as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"payment-service could not charge order {order.id}: {exc}"
            )
        paid = reply.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
        status = order_pb2.ORDER_STATUS_PAID if paid else order_pb2.ORDER_STATUS_PAYMENT_DECLINED
        return await self._orders.record_payment(order.id, status, reply.payment.id)

    async def _notify(self, order: order_pb2.Order, context: Context) -> None:
        """notification-service is optional: failing to tell the user is logged, never fails the order."""
        status = order_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_").lower().replace("_", " ")
        request = notification_pb2.SendRequest(
            user_id=order.user_id,
            channel=notification_pb2.CHANNEL_EMAIL,
            subject=f"Order {order.id}: {status}",
            body=f"{len(order.items)} item(s), {order.total_cents / 100:.2f} {order.currency}",
            dedupe_key=f"order-{order.id}-{order.status}",
        )
        try:
            await retry_idempotent(
                lambda t: self._notifications.Send(request, timeout=t), budget(context, self._timeout / 2)
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("could not notify about order %s: %s %s", order.id, exc.code().name, exc.details())
        except MeshError as exc:
            log.warning("could not notify about order %s: %s", order.id, exc)

    async def GetOrder(self, request: order_pb2.GetOrderRequest, context: Context) -> order_pb2.GetOrderResponse:
        if not request.id:
            await reject(context, "id", "is required")
        order = await self._orders.get(request.id)
        if order is None:
            await not_found(context, "order", request.id)
        return order_pb2.GetOrderResponse(order=order)

    async def ListOrders(self, request: order_pb2.ListOrdersRequest, context: Context) -> order_pb2.ListOrdersResponse:
        if not request.user_id:
            await reject(context, "user_id", "is required")
        if not 0 <= request.limit <= MAX_LIMIT:
            await reject(
                context, "limit", f"{request.limit} must be between 0 and {MAX_LIMIT} (0 means {DEFAULT_LIMIT})"
            )
        return order_pb2.ListOrdersResponse(
            orders=await self._orders.for_user(request.user_id, request.limit or DEFAULT_LIMIT)
        )


def _needs_charge(order: order_pb2.Order) -> bool:
    return order.status == order_pb2.ORDER_STATUS_PENDING and order.total_cents > 0
