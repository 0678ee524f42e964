"""A live web dashboard of the mesh: observed call graph, instances with rates, short history,
registry events.

Served by aiohttp (the ``[dashboard]`` extra) with a static page (plain HTML, vanilla JS,
inline SVG) that gets its updates over Server-Sent Events. Data comes from the registry
(``Registry`` protocol only) and from each instance's Prometheus endpoint, named by its
``metrics_url`` metadata. ``Dashboard`` is imported on first use, so the pure parts
(metrics math, view, history) import without aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grpcmesh.dashboard.view import METRICS_URL_KEY

if TYPE_CHECKING:
    from grpcmesh.dashboard.server import Dashboard, serve_dashboard

__all__ = ["METRICS_URL_KEY", "Dashboard", "serve_dashboard"]


def __getattr__(name: str) -> Any:
    if name in ("Dashboard", "serve_dashboard"):
        from grpcmesh._extras import require

        require("aiohttp", "dashboard", "the dashboard")
        from grpcmesh.dashboard import server

        return getattr(server, name)
    raise AttributeError(f"module 'grpcmesh.dashboard' has no attribute {name!r}")
