"""Optional parts of grpcmesh and the one-line error that says which extra to install.

The core install is small; etcd, Consul, OpenTelemetry, the CLI, the dashboard and the xDS
control plane each need packages a user installs as an extra (``pip install
'grpcmesh[etcd]'``). Modules of those parts import their third-party packages through
``require`` so that using a part without its extra fails with that command, not with a
bare ``ModuleNotFoundError`` from deep inside the library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from grpcmesh.errors import MissingExtraError

__all__ = ["MissingExtraError", "require"]


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtraError`` naming ``pip install 'grpcmesh[extra]'``.

    ``feature`` is what the user asked for, in their words (e.g. "the etcd registry").
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only a missing *optional* package is the user's install problem; a module missing
        # inside grpcmesh itself is a bug and must surface as it is.
        if exc.name is not None and exc.name.split(".")[0] == "grpcmesh":
            raise
        raise MissingExtraError(extra, feature, exc.name or module) from exc
