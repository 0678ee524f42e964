"""The library's error hierarchy: everything grpcmesh raises on purpose is a ``MeshError``.

One root lets callers write ``except grpcmesh.MeshError`` around any mesh operation, while
the subclasses also inherit the matching builtin (``ValueError``, ``LookupError``,
``RuntimeError``) or grpc type so generic handlers keep working::

    MeshError
    ├── InvalidInstanceError (ValueError)     a ServiceInstance field is invalid
    ├── InvalidRecordError (ValueError)       a stored registry record cannot be decoded
    ├── ConfigError (ValueError)              a configuration file or value is invalid
    ├── MissingExtraError (ImportError)       an optional part is used without its extra
    ├── ClosedError (RuntimeError)            an object was used after close()
    │   ├── RegistryClosedError (RegistryError)
    │   └── ChannelClosedError (grpc.aio.UsageError)
    ├── RegistryError
    │   ├── RegistryUnavailableError          the backend could not be reached
    │   ├── RegistryClosedError
    │   └── UnknownSchemeError (ValueError)   open_registry got an unknown URL scheme
    ├── ServerError                           a mesh server could not start, bind or register
    ├── NoEndpointsError (LookupError)        no healthy endpoint matched a name and filter
    └── MeshRpcError (grpc.aio.AioRpcError)   an RPC failure made by the mesh channel itself
        └── NoEndpointsRpcError (NoEndpointsError)
"""

from __future__ import annotations

import grpc


class MeshError(Exception):
    """Root of every error grpcmesh raises deliberately."""


class InvalidInstanceError(MeshError, ValueError):
    """A ``ServiceInstance`` field is invalid; the message names the field and the fix."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidRecordError(MeshError, ValueError):
    """A stored registry record could not be decoded (corrupt or foreign data)."""


class RegistryError(MeshError):
    """A registry operation failed."""


class RegistryUnavailableError(RegistryError):
    """The registry backend could not be reached."""


class ClosedError(MeshError, RuntimeError):
    """An object (registry, channel, server, mesh) was used after ``close()``."""


class RegistryClosedError(RegistryError, ClosedError):
    """The registry was used after ``close()``."""


class ChannelClosedError(ClosedError, grpc.aio.UsageError):
    """A mesh channel was used after ``close()`` (also a ``grpc.aio.UsageError``, as grpc raises)."""


class UnknownSchemeError(RegistryError, ValueError):
    """``open_registry`` got a URL whose scheme names no backend."""


class ConfigError(MeshError, ValueError):
    """A configuration file or value is invalid; the message names the key path.

    ``problems`` holds ``(key_path, problem)`` pairs (e.g. ``("dependencies[1].name", "is
    required")``) and ``file`` the configuration file, when they are known.
    """

    def __init__(self, message: str, *, file: str | None = None, problems: tuple[tuple[str, str], ...] = ()) -> None:
        self.file = file
        self.problems = problems
        super().__init__(message)


class MissingExtraError(MeshError, ImportError):
    """An optional part of grpcmesh was used without the extra that installs its packages."""

    def __init__(self, extra: str, feature: str, missing: str) -> None:
        self.extra = extra
        self.feature = feature
        self.missing = missing
        super().__init__(
            f"{feature} needs the '{extra}' extra ({missing} is not installed): pip install 'grpcmesh[{extra}]'"
        )


class ServerError(MeshError):
    """A mesh server could not start, bind or register (the message says which and why)."""


class NoEndpointsError(MeshError, LookupError):
    """No healthy endpoint matched a service name and filter."""


class MeshRpcError(MeshError, grpc.aio.AioRpcError):
    """An RPC failure produced by the mesh channel itself rather than by a server.

    Stub callers catch it as ``grpc.aio.AioRpcError``/``grpc.RpcError`` like any other call
    failure; mesh-aware code catches it as ``MeshError``.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        grpc.aio.AioRpcError.__init__(
            self, code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, f"grpcmesh: {details}"
        )


class NoEndpointsRpcError(MeshRpcError, NoEndpointsError):
    """No endpoint matched the service and filter: UNAVAILABLE (or DEADLINE_EXCEEDED when the
    call's deadline ran out first) to stub callers, ``NoEndpointsError`` to mesh-aware code."""
