"""payment-service: charges, safe to retry thanks to idempotency keys."""
