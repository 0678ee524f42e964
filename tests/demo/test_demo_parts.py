"""The demo's pure parts: the traffic feed, the summary text, the chaos victim marking in the view."""

from __future__ import annotations

import asyncio
import json

from rich.console import Console

from grpcmesh.demo.observer import InstanceRow
from grpcmesh.demo.summary import ChaosEvent, DemoSummary
from grpcmesh.demo.traffic import TrafficFeed
from grpcmesh.demo.view import instances_table
from grpcmesh.model import ServiceInstance


async def test_traffic_feed_keeps_the_latest_and_the_final_report() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(json.dumps({"calls": 3, "failed": 0, "p99_ms": 12.5}).encode() + b"\n")
    reader.feed_data(b"not json, e.g. a stray print\n")
    reader.feed_data(
        json.dumps({"calls": 7, "failed": 1, "errors": {"UNAVAILABLE": 1}, "final": True}).encode() + b"\n"
    )
    reader.feed_eof()
    feed = TrafficFeed(reader)
    await feed.run()
    assert feed.latest.calls == 7
    assert feed.final is not None
    assert feed.final.errors == {"UNAVAILABLE": 1}


def test_summary_lines_tell_calls_failures_and_chaos() -> None:
    summary = DemoSummary(
        seconds=25.0,
        instances_started=9,
        calls=120,
        failed=0,
        by_operation={"CreateOrder": 70, "CreateUser": 50},
        p50_ms=8.0,
        p99_ms=30.5,
        chaos=[ChaosEvent("order-service", "abcdef0123", 42, 8.3, 43, "fedcba9876", 0.8)],
    )
    text = "\n".join(summary.lines())
    assert "calls: 120 (CreateOrder 70, CreateUser 50)" in text
    assert "failed calls: 0 (errors: none)" in text
    assert "p99 30.5 ms" in text
    assert "killed order-service abcdef01 (pid 42) with SIGKILL at 8.3s" in text
    assert "replacement fedcba98 SERVING after 0.8s" in text
    assert "no instance exposed metrics" in text
    assert DemoSummary().lines()[-1] == "  chaos: no instance was killed"


def test_killed_instances_are_marked_in_the_table() -> None:
    alive = ServiceInstance(name="order-service", id="alive0001", address="127.0.0.1", port=5001)
    dead = ServiceInstance(name="order-service", id="dead00001", address="127.0.0.1", port=5002)
    rows = [InstanceRow(inst, 4.0, 2.0, 9.0, 40, 0, None) for inst in (alive, dead)]
    console = Console(width=140, record=True)
    console.print(instances_table(rows, killed={"dead00001"}))
    lines = console.export_text().splitlines()
    assert "KILLED" in next(line for line in lines if "dead0000" in line)
    alive_line = next(line for line in lines if "alive000" in line)
    assert "SERVING" in alive_line
    assert "9.0ms" in alive_line


def test_instances_table_prints_registry_data_as_text() -> None:
    """A version holding markup (accepted by the model) prints as itself instead of crashing the view."""
    version = "[/x]v1[bold]"
    row = InstanceRow(
        ServiceInstance(name="user-service", id="m1", address="127.0.0.1", port=1, version=version),
        None,
        None,
        None,
        None,
        None,
        None,
    )
    console = Console(record=True, width=200)
    console.print(instances_table([row]))
    assert version in console.export_text()
