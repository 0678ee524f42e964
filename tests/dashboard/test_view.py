"""Unit tests of snapshot diffing and the JSON the page renders."""

from __future__ import annotations

from grpcmesh import HealthStatus, ServiceInstance
from grpcmesh.dashboard.metrics import Window
from grpcmesh.dashboard.scraper import EndpointState, check_metrics_url
from grpcmesh.dashboard.view import EventKind, MeshView, diff_snapshots


def inst(iid: str, name: str = "orders", **extra: object) -> ServiceInstance:
    return ServiceInstance(name=name, id=iid, address="127.0.0.1", port=5000, **extra)


def test_diff_reports_added_changed_removed_in_id_order() -> None:
    before = [inst("a"), inst("b"), inst("c")]
    after = [inst("a"), inst("b", health=HealthStatus.NOT_SERVING), inst("d")]
    events = diff_snapshots(before, after, at=1.0)
    assert [(e.kind, e.instance.id) for e in events] == [
        (EventKind.CHANGED, "b"),
        (EventKind.REMOVED, "c"),
        (EventKind.ADDED, "d"),
    ]
    assert events[0].instance.health is HealthStatus.NOT_SERVING
    assert diff_snapshots(after, after, at=2.0) == []


def test_view_keeps_history_and_drops_empty_services() -> None:
    view = MeshView(history=3)
    view.apply("orders", [inst("a"), inst("b")])
    view.apply("orders", [inst("b")])
    view.apply("orders", [])
    assert view.services == {}
    assert [(e.kind.value, e.instance.id) for e in view.events] == [("added", "b"), ("removed", "a"), ("removed", "b")]


def test_state_json_graph_rates_and_missing_dependencies() -> None:
    view = MeshView()
    url = "http://127.0.0.1:9464/metrics"
    view.apply("gateway", [inst("g1", name="gateway", dependencies=("orders", "ghost"))])
    view.apply("orders", [inst("o1", metadata={"metrics_url": url}), inst("o2", metadata={"metrics_url": url})])
    view.apply("legacy", [inst("l1", name="legacy", health=HealthStatus.NOT_SERVING)])
    assert view.metrics_urls() == {url}
    endpoint = EndpointState(window=Window(10.0, 1.0, {0.01: 10.0, float("inf"): 10.0}))
    state = view.to_json(lambda u: endpoint if u == url else None)
    by_name = {s["name"]: s for s in state["services"]}
    edges = {(e["from"], e["to"]): e for e in state["edges"]}
    assert sorted(edges) == [("external", "orders"), ("gateway", "ghost"), ("gateway", "orders")]
    # declared, never seen in client metrics: drawn as declared only
    assert (edges["gateway", "orders"]["declared"], edges["gateway", "orders"]["observed"]) == (True, False)
    # orders served 10 calls/s that no mesh caller reports: they came from outside the mesh
    assert edges["external", "orders"]["rates"]["calls_per_second"] == 10.0
    assert by_name["external"]["external"] is True
    assert by_name["ghost"]["registered"] is False
    assert by_name["ghost"]["instances"] == []
    # two instances sharing one endpoint: the service total counts it once
    assert by_name["orders"]["rates"]["calls_per_second"] == 10.0
    assert by_name["orders"]["rates"]["error_ratio"] == 0.1
    assert [i["metrics"]["status"] for i in by_name["orders"]["instances"]] == ["ok", "ok"]
    assert by_name["legacy"]["health"] == "NOT_SERVING"
    assert by_name["legacy"]["rates"] is None
    assert by_name["legacy"]["instances"][0]["metrics"]["status"] == "none"


def test_only_http_metrics_urls_are_scraped() -> None:
    assert check_metrics_url("http://127.0.0.1:9464/metrics") is None
    assert check_metrics_url("https://host/metrics") is None
    problem = check_metrics_url("file:///etc/passwd")
    assert problem is not None
    assert "http(s)" in problem


def test_no_external_edge_while_a_callers_scrape_is_missing() -> None:
    """The caller's endpoint failed this round: its calls must not be mistaken for outside callers."""
    view = MeshView()
    callee_url, caller_url = "http://127.0.0.1:9464/metrics", "http://127.0.0.1:9465/metrics"
    view.apply("orders", [inst("o1", metadata={"metrics_url": callee_url})])
    view.apply("gateway", [inst("g1", name="gateway", metadata={"metrics_url": caller_url})])
    served = EndpointState(window=Window(10.0, 0.0))
    calling = EndpointState(window=Window(0.0, 0.0), edges={("gateway", "orders"): Window(10.0, 0.0)})
    failed = EndpointState(error="timed out after 0.8s")

    def edges(caller: EndpointState) -> set[tuple[str, str]]:
        state = view.to_json(lambda u: served if u == callee_url else caller)
        return {(e["from"], e["to"]) for e in state["edges"]}

    assert edges(calling) == {("gateway", "orders")}
    assert edges(failed) == set()
