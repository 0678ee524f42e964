"""The traffic generator's reports: JSON lines on its stdout, the latest one kept."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("grpcmesh.demo")


@dataclass
class TrafficReport:
    """One report (all counts cumulative since the generator started)."""

    calls: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    by_operation: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    window_calls_per_s: float = 0.0
    window_p50_ms: float | None = None
    window_p99_ms: float | None = None
    users: int = 0
    orders: int = 0
    final: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrafficReport:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


class TrafficFeed:
    """Reads reports from the generator's stdout until it ends; ``latest`` is the newest."""

    def __init__(self, stdout: asyncio.StreamReader) -> None:
        self._stdout = stdout
        self.latest = TrafficReport()
        self.final: TrafficReport | None = None

    async def run(self) -> None:
        while line := await self._stdout.readline():
            try:
                report = TrafficReport.from_json(json.loads(line))
            except (ValueError, TypeError) as exc:
                log.debug("ignoring a traffic line that is not a report: %s (%r)", exc, line[:200])
                continue
            self.latest = report
            if report.final:
                self.final = report
