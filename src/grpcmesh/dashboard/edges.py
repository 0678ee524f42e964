"""The graph's edges: who calls whom as observed in the client metrics, next to what is declared.

Each mesh process labels its ``grpc_client_*`` series with its own service name (``caller``)
and the service its ``MeshChannel`` called (``callee``); summing those windows per pair gives
an observed edge with calls/s, error ratio and p99. A dependency declared in the registry but
never seen in the metrics is still drawn, as "declared only". Calls a service served that no
mesh caller accounts for (a CLI, a script, a client outside the mesh) form the edge from the
``external`` node; only clearly unaccounted traffic counts, since scrapes of different
processes happen a few milliseconds apart.

Pure functions, unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from grpcmesh.dashboard.metrics import EdgeKey, Rates, Window, summarize

EXTERNAL = "external"
"""The node standing for callers outside the mesh."""

EXTERNAL_MIN_SHARE = 0.1
"""Unaccounted calls must be at least this share of what the service served..."""
EXTERNAL_MIN_RATE = 0.1
"""...and at least this many calls/s, so small timing differences between scrapes draw no edge."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    declared: bool
    """A registered instance of ``source`` lists ``target`` as a dependency."""
    observed: bool
    """The client metrics (or, for ``external``, the server metrics) show calls on this pair."""
    rates: Rates | None

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "declared": self.declared,
            "observed": self.observed,
            "rates": None if self.rates is None else self.rates.to_json(),
        }


def build_edges(
    services: Collection[str],
    declared: Iterable[EdgeKey],
    observed: Mapping[EdgeKey, Window],
    served: Mapping[str, Window],
) -> list[Edge]:
    """Every edge the graph draws, sorted by (source, target).

    ``services`` are the known mesh services (registered or declared): a ``callee`` outside them
    is ignored and a ``caller`` outside them counts as external (through ``served``).
    ``observed`` holds client-side windows per (caller, callee); ``served`` the server-side
    window per service.
    """
    known = set(services)
    by_pair: dict[EdgeKey, Window] = {}
    for (caller, callee), window in observed.items():
        if callee in known and caller in known:
            by_pair[(caller, callee)] = by_pair[(caller, callee)] + window if (caller, callee) in by_pair else window
    edges: dict[EdgeKey, Edge] = {}
    for (caller, callee), window in by_pair.items():
        edges[(caller, callee)] = Edge(caller, callee, False, True, summarize(window))
    for caller, callee in declared:
        found = edges.get((caller, callee))
        if found is not None:
            edges[(caller, callee)] = Edge(caller, callee, True, True, found.rates)
        else:
            edges[(caller, callee)] = Edge(caller, callee, True, False, None)
    for callee, window in served.items():
        external = _unaccounted(window, [w for (_, to), w in by_pair.items() if to == callee])
        if external is not None:
            edges[(EXTERNAL, callee)] = Edge(EXTERNAL, callee, False, True, summarize(external))
    return [edges[key] for key in sorted(edges)]


def _unaccounted(served: Window, from_mesh: list[Window]) -> Window | None:
    """The calls ``served`` that the mesh callers' windows do not explain, if clearly any."""
    calls = served.calls_per_second - sum(w.calls_per_second for w in from_mesh)
    if calls < max(EXTERNAL_MIN_RATE, EXTERNAL_MIN_SHARE * served.calls_per_second):
        return None
    errors = served.errors_per_second - sum(w.errors_per_second for w in from_mesh)
    return Window(calls_per_second=calls, errors_per_second=min(calls, max(0.0, errors)))
