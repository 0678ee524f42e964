"""The NotificationService servicer."""

from __future__ import annotations

import logging

import grpc

from shop.notification.repository import NotificationRepository
from shop.notification.v1 import notification_pb2, notification_pb2_grpc
from shop.rpc import reject

log = logging.getLogger("shop.notification")

Context = grpc.aio.ServicerContext[object, object]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class NotificationService(notification_pb2_grpc.NotificationServiceServicer):
    """notification-service: no dependencies."""

    def __init__(self, notifications: NotificationRepository) -> None:
        self._notifications = notifications

    async def Send(self, request: notification_pb2.SendRequest, context: Context) -> notification_pb2.SendResponse:
        if not request.user_id:
            await reject(context, "user_id", "is required")
        if not request.subject.strip():
            await reject(context, "subject", "is required")
        if request.channel not in notification_pb2.Channel.values():
            await reject(
                context, "channel", f"{request.channel} is not a known channel; use CHANNEL_EMAIL or CHANNEL_SMS"
            )
        channel = request.channel or notification_pb2.CHANNEL_EMAIL
        notification, duplicate = await self._notifications.add(
            request.user_id, channel, request.subject, request.body, request.dedupe_key
        )
        if not duplicate:
            log.info("to %s via %s: %s", request.user_id, notification_pb2.Channel.Name(channel), request.subject)
        return notification_pb2.SendResponse(notification=notification)

    async def ListNotifications(
        self, request: notification_pb2.ListNotificationsRequest, context: Context
    ) -> notification_pb2.ListNotificationsResponse:
        if not request.user_id:
            await reject(context, "user_id", "is required")
        if not 0 <= request.limit <= MAX_LIMIT:
            await reject(
                context, "limit", f"{request.limit} must be between 0 and {MAX_LIMIT} (0 means {DEFAULT_LIMIT})"
            )
        found = await self._notifications.for_user(request.user_id, request.limit or DEFAULT_LIMIT)
        return notification_pb2.ListNotificationsResponse(notifications=found)
