"""The library's error hierarchy: everything grpcmesh raises on purpose is a ``MeshError``.

One root lets callers write ``except grpcmesh.MeshError`` around any mesh operation, while
the subclasses also inherit the matching builtin (``ValueError``, ``LookupError``) so
generic handlers keep working.
"""

from __future__ import annotations


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


class RegistryClosedError(RegistryError):
    """The registry was used after ``close()``."""


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


class ServerError(MeshError):
    """A mesh server could not start, bind or register (the message says which and why)."""


class NoEndpointsError(MeshError, LookupError):
    """No healthy endpoint matched a service name and filter."""
