"""A live web dashboard of the mesh: dependency graph, instances with rates, registry events.

Served by aiohttp with a static page (plain HTML, vanilla JS, inline SVG) that gets its
updates over Server-Sent Events. Data comes from the registry (``Registry`` protocol only)
and from each instance's Prometheus endpoint, named by its ``metrics_url`` metadata.
"""

from grpcmesh._extras import require

require("aiohttp", "dashboard", "the dashboard")

from grpcmesh.dashboard.server import Dashboard, serve_dashboard  # noqa: E402  (after the extra check)
from grpcmesh.dashboard.view import METRICS_URL_KEY  # noqa: E402

__all__ = ["METRICS_URL_KEY", "Dashboard", "serve_dashboard"]
