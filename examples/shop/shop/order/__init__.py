"""order-service: orders, validated with user-service, charged with payment-service."""
