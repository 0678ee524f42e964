"""The live terminal view: traffic totals, one row per instance, recent events."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from grpcmesh.demo.observer import InstanceRow
from grpcmesh.demo.traffic import TrafficReport
from grpcmesh.model import HealthStatus

_HEALTH_STYLE = {HealthStatus.SERVING: "green", HealthStatus.NOT_SERVING: "red", HealthStatus.UNKNOWN: "yellow"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def _number(value: float | int | None, fmt: str = "{:g}") -> str:
    return "-" if value is None else fmt.format(value)


def instances_table(rows: Sequence[InstanceRow], killed: Collection[str] = ()) -> Table:
    """One row per registered instance; ``killed`` ids (SIGKILLed, still listed until their TTL ends) in red."""
    table = Table(box=box.SIMPLE_HEAD, expand=False, pad_edge=False, collapse_padding=True)
    for column, justify in (
        ("service", "left"),
        ("instance", "left"),
        ("address", "left"),
        ("version", "left"),
        ("health", "left"),
        ("calls/s", "right"),
        ("p50", "right"),
        ("p99", "right"),
        ("calls", "right"),
        ("errors", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=True, min_width=len(column))  # type: ignore[arg-type]
    previous = ""
    for row in rows:
        inst = row.instance
        style = _HEALTH_STYLE.get(inst.health, "yellow")
        health = Text(inst.health.value, style=style)
        if inst.id in killed:
            health = Text("KILLED", style="bold red")
        elif row.metrics_problem and row.metrics_problem.startswith("scrape failed"):
            health = Text(f"{inst.health.value}?", style="red")
        errors = row.errors_total
        dead = inst.id in killed
        table.add_row(  # registry data as Text: never read as markup
            Text(inst.name if inst.name != previous else ""),
            Text(inst.id[:8]),
            Text(inst.target),
            Text(inst.version or "-"),
            health,
            "-" if dead else _number(row.calls_per_second, "{:.1f}"),
            "-" if dead else _ms(row.p50_ms),
            "-" if dead else _ms(row.p99_ms),
            _number(row.calls_total, "{:d}"),
            Text(_number(errors, "{:d}"), style="red" if errors else "green"),
        )
        previous = inst.name
    return table


def traffic_line(report: TrafficReport) -> Text:
    failed_style = "bold red" if report.failed else "bold green"
    text = Text()
    text.append("traffic ", style="bold")
    text.append(f"{report.window_calls_per_s:.1f} calls/s  ")
    text.append(f"calls {report.calls}  ")
    text.append(f"failed {report.failed}", style=failed_style)
    text.append(f"  p50 {_ms(report.window_p50_ms)}  p99 {_ms(report.window_p99_ms)}")
    text.append(f"  users {report.users}  orders {report.orders}", style="dim")
    if report.last_error:
        text.append(f"\nlast error: {report.last_error}", style="red")
    return text


def render(
    *,
    title: str,
    started: float | None,
    phase: str,
    traffic: TrafficReport,
    rows: Sequence[InstanceRow],
    events: Sequence[str],
    chaos: str,
    killed: Collection[str] = (),
) -> RenderableType:
    """The whole screen."""
    elapsed = f"{time.monotonic() - started:5.1f}s" if started is not None else "starting"
    header = Group(traffic_line(traffic), Text(f"chaos   {chaos}", style="magenta"))
    log = Text("\n".join(events[-6:]) or "(no events yet)", style="dim")
    return Group(
        Panel(header, title=Text(f"{title} — {phase} — {elapsed}"), title_align="left"),
        instances_table(rows, killed),
        Panel(log, title="events", title_align="left"),
    )
