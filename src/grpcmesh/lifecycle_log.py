"""Lifecycle lines by default: where a service listens, that it registered, health changes, shutdown.

grpcmesh reports those through the standard ``logging`` module (loggers under ``grpcmesh``),
at INFO. An application that configures ``logging`` itself decides where they go; one that
does not would see none of them (Python prints only warnings without a handler). So a
``Mesh`` installs one handler on the ``grpcmesh`` logger when, and only while, nobody else
has configured logging, formatted as the config's ``logging:`` section asks (``format:
json`` or ``console``, ``level``; ``lifecycle: false`` turns this off).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from grpcmesh.config.models import LoggingConfig

LOGGER_NAME = "grpcmesh"


class LifecycleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes grpcmesh's own log records to stderr, as JSON objects or console lines.

    Steps aside as soon as the root logger gets a handler (the application configured
    logging after the mesh started), so no line is printed twice.
    """

    def __init__(self, *, as_json: bool) -> None:
        super().__init__(sys.stderr)
        self.as_json = as_json

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        timestamp = datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z")
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message = f"{message}: {record.exc_info[1]!r}"
        if self.as_json:
            return json.dumps(
                {"event": message, "level": record.levelname.lower(), "logger": record.name, "timestamp": timestamp}
            )
        return f"{timestamp} [{record.levelname.lower():<7}] {message}  logger={record.name}"


def install_lifecycle_logging(config: LoggingConfig) -> LifecycleHandler | None:
    """Install the handler if ``config`` wants lifecycle lines and nobody configured logging; else ``None``."""
    if not config.lifecycle:
        return None
    logger = logging.getLogger(LOGGER_NAME)
    for existing in logger.handlers:
        if isinstance(existing, LifecycleHandler):
            existing.as_json = config.format == "json"
            return existing
    if logging.getLogger().handlers or logger.handlers:
        return None  # the application routes logging itself
    handler = LifecycleHandler(as_json=config.format == "json")
    handler.setLevel(config.level)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(config.level)
    return handler
