"""The four RPC kinds and method names, named once for the whole library (client engine, server wrapper, metrics)."""

from __future__ import annotations

import enum


class RpcType(enum.StrEnum):
    """An RPC kind, spelled as the de-facto ``grpc_type`` Prometheus label."""

    UNARY = "unary"
    CLIENT_STREAM = "client_stream"
    SERVER_STREAM = "server_stream"
    BIDI_STREAM = "bidi_stream"

    @classmethod
    def of(cls, request_streaming: bool, response_streaming: bool) -> RpcType:
        if request_streaming:
            return cls.BIDI_STREAM if response_streaming else cls.CLIENT_STREAM
        return cls.SERVER_STREAM if response_streaming else cls.UNARY

    @property
    def request_streaming(self) -> bool:
        return self is RpcType.CLIENT_STREAM or self is RpcType.BIDI_STREAM

    @property
    def response_streaming(self) -> bool:
        return self is RpcType.SERVER_STREAM or self is RpcType.BIDI_STREAM

    @property
    def channel_method(self) -> str:
        """The ``grpc.aio.Channel`` factory for this kind (``unary_unary``, ``stream_stream``...)."""
        return _CHANNEL_METHODS[self]


_CHANNEL_METHODS = {
    RpcType.UNARY: "unary_unary",
    RpcType.SERVER_STREAM: "unary_stream",
    RpcType.CLIENT_STREAM: "stream_unary",
    RpcType.BIDI_STREAM: "stream_stream",
}


MAX_CACHED_METHODS = 4096
"""Per-method caches (split names, wrapped handlers, metric children) stop growing at this size,
so a server behind a catch-all generic handler cannot grow them without bound."""

_SPLIT_CACHE: dict[str | bytes, tuple[str, str]] = {}


def split_method(full_method: str | bytes) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``); unknown shapes keep the whole name."""
    found = _SPLIT_CACHE.get(full_method)
    if found is None:
        text = full_method.decode() if isinstance(full_method, bytes) else full_method
        service, _, method = text.lstrip("/").rpartition("/")
        found = (service, method) if service else ("unknown", text)
        if len(_SPLIT_CACHE) < MAX_CACHED_METHODS:
            _SPLIT_CACHE[full_method] = found
    return found
