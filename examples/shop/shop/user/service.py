"""The UserService servicer: users, plus a welcome order for each new user (best effort)."""

from __future__ import annotations

import logging

import grpc

from grpcmesh import MeshError
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.retry import retry_idempotent
from shop.rpc import budget, check_email, check_name, not_found, reject
from shop.user.repository import EmailTakenError, UserRepository
from shop.user.v1 import user_pb2, user_pb2_grpc

log = logging.getLogger("shop.user")

Context = grpc.aio.ServicerContext[object, object]


class UserService(user_pb2_grpc.UserServiceServicer):
    """user-service. order-service is an *optional* dependency: if it is down users are still created."""

    def __init__(
        self, users: UserRepository, orders: order_pb2_grpc.OrderServiceAsyncStub, *, order_timeout: float = 2.0
    ):
        self._users = users
        self._orders = orders
        self._order_timeout = order_timeout

    async def CreateUser(self, request: user_pb2.CreateUserRequest, context: Context) -> user_pb2.CreateUserResponse:
        if problem := check_name(request.name):
            await reject(context, "name", problem)
        if problem := check_email(request.email):
            await reject(context, "email", problem)
        try:
            user, _ = await self._users.create(request.name, request.email, request.idempotency_key)
        except EmailTakenError:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"email {request.email.lower()!r} is already taken")
        return user_pb2.CreateUserResponse(user=user, initial_order_id=await self._welcome_order(user, context))

    async def _welcome_order(self, user: user_pb2.User, context: Context) -> str:
        """Create the user's (empty) welcome order; log and carry on if order-service fails, as the seed does."""
        try:
            request = order_pb2.CreateOrderRequest(user_id=user.id, idempotency_key=f"welcome-{user.id}")
            reply = await retry_idempotent(
                lambda t: self._orders.CreateOrder(request, timeout=t), budget(context, self._order_timeout)
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("welcome order for %s failed: %s %s", user.id, exc.code().name, exc.details())
            return ""
        except MeshError as exc:
            log.warning("welcome order for %s failed: %s", user.id, exc)
            return ""
        return reply.order_id

    async def GetUser(self, request: user_pb2.GetUserRequest, context: Context) -> user_pb2.GetUserResponse:
        if not request.id:
            await reject(context, "id", "is required")
        user = await self._users.get(request.id)
        if user is None:
            await not_found(context, "user", request.id)
        return user_pb2.GetUserResponse(user=user)

    async def UpdateUser(self, request: user_pb2.UpdateUserRequest, context: Context) -> user_pb2.UpdateUserResponse:
        if not request.id:
            await reject(context, "id", "is required")
        if request.name and (problem := check_name(request.name)):
            await reject(context, "name", problem)
        if request.email and (problem := check_email(request.email)):
            await reject(context, "email", problem)
        try:
            user = await self._users.update(request.id, name=request.name, email=request.email)
        except EmailTakenError:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"email {request.email.lower()!r} is already taken")
        if user is None:
            await not_found(context, "user", request.id)
        return user_pb2.UpdateUserResponse(user=user)
