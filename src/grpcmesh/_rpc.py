"""The four RPC kinds, named once for the whole library (client engine, server wrapper, metrics)."""

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
