"""Structured access logs for gRPC calls (structlog): a line per call, server and client side.

Each line carries service, method, RPC type, peer, status code, duration and trace id, and
never a message body or a metadata value. Which calls get a line is the ``access_log`` mode:
``all``; ``sampled`` (the default of the ``logging:`` config section: every failed or slow
call, plus a random ``access_log_sample_rate`` share of the rest); ``errors`` (failed or slow
calls only); ``off``. The decision is made before the line is built, so a call that is not
logged costs a comparison. ``configure_logging`` sets up JSON lines (for log
shippers) or a human console format (for the demo), with a processor that redacts any field
whose name looks like a secret.
"""

from __future__ import annotations

import asyncio
import logging as stdlib_logging
import random
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Literal, TextIO

import grpc
import structlog

from grpcmesh.context import REQUEST_ID_HEADER, current_request_id
from grpcmesh.errors import ConfigError
from grpcmesh.middleware.client_side import ClientCall, ClientFinish, ClientInterceptor, client_interceptors
from grpcmesh.middleware.server_side import (
    SERVER_ERROR_CODES,
    ServerCall,
    ServerConcern,
    ServerFinish,
    ServerObservingInterceptor,
    ServerPipeline,
)
from grpcmesh.middleware.trace_context import current_trace_id, trace_id_of

_OK = grpc.StatusCode.OK

ACCESS_LOGGER = "grpcmesh.rpc"

REDACTED = "[REDACTED]"

SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|authori[sz]ation|credential|cookie|private|signature|(^|[-_.])key$|apikey"
    r"|(^|[-_.])auth$",
    re.IGNORECASE,
)
"""Field names whose values are replaced by ``[REDACTED]`` (``password``, ``x-service-key``, ``x-mesh-auth``,
``auth_token``...)."""


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
        "request_id",
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


AccessLogMode = Literal["all", "sampled", "errors", "off"]
ACCESS_LOG_MODES: tuple[AccessLogMode, ...] = ("all", "sampled", "errors", "off")
DEFAULT_SAMPLE_RATE = 0.01
DEFAULT_SLOW_CALL = 1.0


def _first_value(metadata: Any, key: str) -> str | None:
    for item_key, value in metadata or ():
        if item_key == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def _log(logger: Any, fields: dict[str, Any], code: grpc.StatusCode, error: BaseException | None) -> None:
    if error is not None and not isinstance(
        error, grpc.aio.AbortError | grpc.RpcError | asyncio.CancelledError | GeneratorExit
    ):
        fields["error"] = type(error).__name__  # the type only: messages may carry request data
    if code is grpc.StatusCode.OK:
        logger.info("rpc", **fields)
    elif code in SERVER_ERROR_CODES:
        logger.error("rpc", **fields)
    else:
        logger.warning("rpc", **fields)


class AccessLog:
    """The access log's server and client observers, with the mode deciding which calls get a line.

    ``service_name`` is this mesh's service (server lines); client lines name the callee.
    """

    def __init__(
        self,
        service_name: str | None = None,
        logger: Any = None,
        *,
        mode: AccessLogMode = "all",
        sample_rate: float = DEFAULT_SAMPLE_RATE,
        slow_call_threshold: float = DEFAULT_SLOW_CALL,
    ) -> None:
        if mode not in ACCESS_LOG_MODES:
            raise ConfigError(f"logging.access_log: {mode!r} is not one of {', '.join(ACCESS_LOG_MODES)}")
        if not 0.0 <= sample_rate <= 1.0:
            raise ConfigError(f"logging.access_log_sample_rate: {sample_rate} is outside 0..1")
        if slow_call_threshold < 0:
            raise ConfigError(f"logging.slow_call_threshold: {slow_call_threshold} must be >= 0 seconds")
        self.service_name = service_name
        self.mode = mode
        self._log = _access_logger(logger)
        # A line is written for every call, or a failed, slow or drawn one (the test is inline in
        # both finish hooks: a method call per call was a measurable part of this concern's cost).
        self._every = mode == "all"
        self._rate = sample_rate if mode == "sampled" else 0.0  # random() < 0.0 never draws
        self._slow = slow_call_threshold

    def server_concern(self) -> ServerConcern | None:
        return None if self.mode == "off" else ServerConcern("logging", observe=self.observe_server)

    def observe_server(self, _call: ServerCall) -> ServerFinish:
        return self._finish_server

    def _finish_server(self, call: ServerCall) -> None:
        duration = call.duration
        if not (self._every or call.code is not _OK or duration >= self._slow or random.random() < self._rate):
            return
        code = call.code or grpc.StatusCode.UNKNOWN
        fields = {
            "side": "server",
            "service": self.service_name or call.service,
            "method": call.full_method,
            "grpc_type": call.rpc_type.value,
            "peer": call.peer(),
            "code": code.name,
            "duration_ms": round(duration * 1000, 3),
            "trace_id": call.trace_id or current_trace_id() or trace_id_of(call.metadata),
            "request_id": current_request_id() or call.header(REQUEST_ID_HEADER),
        }
        _log(self._log(), fields, code, call.error)

    def observe_client(self, call: ClientCall) -> ClientFinish | None:
        # Nothing per call up front: the trace id is looked up only for a line that is written
        # (tracing, when on, runs first and sets it; else the traceparent sent, if any).
        return None if self.mode == "off" else self._finish_client

    def _finish_client(self, call: ClientCall) -> None:
        duration = call.duration
        if not (self._every or call.code is not _OK or duration >= self._slow or random.random() < self._rate):
            return
        code = call.code or grpc.StatusCode.UNKNOWN
        fields = {
            "side": "client",
            "service": call.callee or self.service_name or call.service,
            "method": call.full_method,
            "grpc_type": call.rpc_type.value,
            "peer": call.target or "unknown",
            "code": code.name,
            "duration_ms": round(duration * 1000, 3),
            "trace_id": call.trace_id or trace_id_of(call.metadata) or current_trace_id(),
            "request_id": _first_value(call.metadata, REQUEST_ID_HEADER),
        }
        _log(self._log(), fields, code, call.error)


def logging_server_interceptor(
    service_name: str | None = None, logger: Any = None, *, access_log: AccessLogMode = "all", **policy: Any
) -> ServerObservingInterceptor:
    """A server interceptor logging one line per call (``access_log="all"``; see :class:`AccessLog`).

    ``service_name`` is the mesh name to log. Put it after the tracing interceptor so the line
    carries the server span's trace id.
    """
    concern = AccessLog(service_name, logger, mode=access_log, **policy).server_concern()
    return ServerObservingInterceptor(ServerPipeline([] if concern is None else [concern]))


def logging_client_interceptors(
    service_name: str | None = None,
    target: str | None = None,
    logger: Any = None,
    *,
    access_log: AccessLogMode = "all",
    **policy: Any,
) -> list[ClientInterceptor]:
    """Client interceptors logging one line per call (``access_log="all"``; see :class:`AccessLog`).

    ``service_name`` is the callee's mesh name and ``target`` its address, when known (grpc.aio
    does not tell client interceptors the peer). Put them after the tracing interceptors so
    the line carries the trace id that was sent.
    """
    return client_interceptors(AccessLog(service_name, logger, mode=access_log, **policy).observe_client, target)
