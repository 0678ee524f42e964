"""The PaymentService servicer: idempotent charges with a simple, deterministic decline rule."""

from __future__ import annotations

import logging

import grpc

from shop.payment.repository import PaymentRepository
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.rpc import CURRENCY_RE, not_found, reject

log = logging.getLogger("shop.payment")

Context = grpc.aio.ServicerContext[object, object]

MAX_CHARGE_CENTS = 1_000_000
"""Charges above this (10,000.00) are declined, so the example can show a declined payment."""


class PaymentService(payment_pb2_grpc.PaymentServiceServicer):
    """payment-service: no dependencies."""

    def __init__(self, payments: PaymentRepository) -> None:
        self._payments = payments

    async def Charge(self, request: payment_pb2.ChargeRequest, context: Context) -> payment_pb2.ChargeResponse:
        if not request.idempotency_key:
            await reject(context, "idempotency_key", "is required so that a retried charge is not charged twice")
        if request.amount_cents <= 0:
            await reject(context, "amount_cents", f"{request.amount_cents} must be a positive number of cents")
        currency = request.currency or "EUR"
        if not CURRENCY_RE.match(currency):
            await reject(context, "currency", f"{currency!r} is not an ISO 4217 code such as 'EUR'")
        declined = request.amount_cents > MAX_CHARGE_CENTS
        candidate = payment_pb2.Payment(
            idempotency_key=request.idempotency_key,
            order_id=request.order_id,
            user_id=request.user_id,
            amount_cents=request.amount_cents,
            currency=currency,
            status=payment_pb2.PAYMENT_STATUS_DECLINED if declined else payment_pb2.PAYMENT_STATUS_SUCCEEDED,
            decline_reason=f"amount above the {MAX_CHARGE_CENTS} cents limit" if declined else "",
        )
        payment, replayed = await self._payments.store_once(candidate)
        if replayed and (payment.amount_cents, payment.currency, payment.order_id) != (
            candidate.amount_cents,
            candidate.currency,
            candidate.order_id,
        ):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"idempotency_key {request.idempotency_key!r} was used for a different charge "
                f"({payment.amount_cents} {payment.currency} for order {payment.order_id!r}); use a new key",
            )
        if not replayed:
            outcome = "declined" if declined else "charged"
            log.info(
                "%s %d %s for order %s (%s)", outcome, payment.amount_cents, currency, payment.order_id, payment.id
            )
        return payment_pb2.ChargeResponse(payment=payment, replayed=replayed)

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: Context
    ) -> payment_pb2.GetPaymentResponse:
        if not request.id:
            await reject(context, "id", "is required")
        payment = await self._payments.get(request.id)
        if payment is None:
            await not_found(context, "payment", request.id)
        return payment_pb2.GetPaymentResponse(payment=payment)
