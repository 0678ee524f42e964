"""gRPC interceptors, one concern per module (``recovery``, and auth, metrics, tracing, logging)."""
