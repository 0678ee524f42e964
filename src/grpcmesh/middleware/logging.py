"""Structured access logs for gRPC calls (structlog): one line per call, server and client side.

Each line carries service, method, RPC type, peer, status code, duration and trace id, and
never a message body or a metadata value. ``configure_logging`` sets up JSON lines (for log
shippers) or a human console format (for the demo), with a processor that redacts any field
whose name looks like a secret.
"""

from __future__ import annotations

import asyncio
import logging as stdlib_logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import grpc
import structlog

from grpcmesh.errors import ConfigError
from grpcmesh.middleware._calls import (
    ClientCall,
    ClientFinish,
    ClientInterceptor,
    ServerCall,
    ServerInterceptor,
    ServerObservingInterceptor,
    client_interceptors,
)
from grpcmesh.middleware.trace_ids import SERVER_ERROR_CODES, current_trace_id, trace_id_of

ACCESS_LOGGER = "grpcmesh.rpc"

REDACTED = "[REDACTED]"

SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|authori[sz]ation|credential|cookie|private|signature|(^|[-_.])key$|apikey",
    re.IGNORECASE,
)
"""Field names whose values are replaced by ``[REDACTED]`` (``password``, ``x-service-key``, ``auth_token``...)."""


def redact_secrets(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace the value of every secret-looking key, also inside nested dicts.

    An event whose keys are all known-safe names (an access-log line with the standard
    processors' fields, and no nested mapping) is passed through without the walk.
    """
    if event_dict.keys() <= SAFE_FIELDS and not any(isinstance(value, Mapping) for value in event_dict.values()):
        return event_dict
    return _redact(event_dict)


SAFE_FIELDS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "side",
        "service",
        "method",
        "grpc_type",
        "peer",
        "code",
        "duration_ms",
        "trace_id",
        "error",
    }
)
"""Field names that do not match ``SECRET_NAME``: the access log's own plus structlog's standard ones."""

_secret_names: dict[str, bool] = {}


def _is_secret_name(key: object) -> bool:
    """``SECRET_NAME.search`` on the key, remembered per name (log events reuse a handful of names)."""
    name = str(key)
    found = _secret_names.get(name)
    if found is None:
        found = bool(SECRET_NAME.search(name))
        if len(_secret_names) < 4096:
            _secret_names[name] = found
    return found


def _redact(mapping: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(mapping.items()):
        if key != "event" and _is_secret_name(key):
            mapping[key] = REDACTED
        elif isinstance(value, Mapping):
            mapping[key] = _redact(dict(value))
    return mapping


def configure_logging(json: bool = True, level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Configure structlog process-wide (structlog's configuration is global by design).

    ``json=True`` writes one JSON object per line; ``json=False`` a coloured-free human format.
    ``level`` is a name (``"DEBUG"``, ``"info"``) or a ``logging`` level number.
    """
    numeric = _level_number(level)
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = stdlib_logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ConfigError(f"logging.level: unknown level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    return number


class _BoundPerConfiguration:
    """structlog's lazy logger, bound once per structlog configuration instead of on every line.

    With ``cache_logger_on_first_use=False`` (needed so ``configure_logging`` can be called
    again) the lazy proxy rebuilds its bound logger on every method call. This keeps the
    bound logger while the configuration's objects are the same ones and rebinds as soon as
    any is replaced (``structlog.configure``, ``capture_logs``...), so it logs exactly as
    the proxy would.
    """

    __slots__ = ("_bound", "_key", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._key: tuple[object, ...] = ()
        self._bound: Any = None

    def get(self) -> Any:
        config = structlog.get_config()
        key = (config["processors"], config["wrapper_class"], config["logger_factory"], config["context_class"])
        if len(key) != len(self._key) or any(new is not old for new, old in zip(key, self._key, strict=True)):
            self._bound = structlog.get_logger(self._name).bind()
            self._key = key
        return self._bound


def _access_logger(logger: Any) -> Callable[[], Any]:
    """What the interceptors call for their logger: the given one, or the bound access logger."""
    if logger is not None:
        return lambda: logger
    return _BoundPerConfiguration(ACCESS_LOGGER).get


def _log(logger: Any, fields: dict[str, Any], code: grpc.StatusCode, error: BaseException | None) -> None:
    if error is not None and not isinstance(error, grpc.aio.AbortError | grpc.RpcError | asyncio.CancelledError):
        fields["error"] = type(error).__name__  # the type only: messages may carry request data
    if code is grpc.StatusCode.OK:
        logger.info("rpc", **fields)
    elif code in SERVER_ERROR_CODES:
        logger.error("rpc", **fields)
    else:
        logger.warning("rpc", **fields)


def logging_server_interceptor(service_name: str | None = None, logger: Any = None) -> ServerInterceptor:
    """A server interceptor logging one line per call; ``service_name`` is the mesh name to log.

    Put it after the tracing interceptor so the line carries the server span's trace id.
    """
    log = _access_logger(logger)

    @contextmanager
    def observe(call: ServerCall) -> Iterator[None]:
        try:
            yield
        finally:
            code = call.code or grpc.StatusCode.UNKNOWN
            fields = {
                "side": "server",
                "service": service_name or call.service,
                "method": call.full_method,
                "grpc_type": call.rpc_type.value,
                "peer": call.peer(),
                "code": code.name,
                "duration_ms": round(call.duration * 1000, 3),
                "trace_id": current_trace_id() or trace_id_of(call.metadata),
            }
            _log(log(), fields, code, call.error)

    return ServerObservingInterceptor(observe)


def logging_client_interceptors(
    service_name: str | None = None, target: str | None = None, logger: Any = None
) -> list[ClientInterceptor]:
    """Client interceptors logging one line per call.

    ``service_name`` is the callee's mesh name and ``target`` its address, when known (grpc.aio
    does not tell client interceptors the peer). Put them after the tracing interceptors so
    the line carries the trace id that was sent.
    """
    log = _access_logger(logger)

    def observe(call: ClientCall) -> ClientFinish:
        trace_id = trace_id_of(tuple(call.metadata)) or current_trace_id()

        def finish(done: ClientCall) -> None:
            code = done.code or grpc.StatusCode.UNKNOWN
            fields = {
                "side": "client",
                "service": service_name or done.service,
                "method": done.full_method,
                "grpc_type": done.rpc_type.value,
                "peer": done.target or "unknown",
                "code": code.name,
                "duration_ms": round(done.duration * 1000, 3),
                "trace_id": trace_id,
            }
            _log(log(), fields, code, done.error)

        return finish

    return client_interceptors(observe, target=target)
