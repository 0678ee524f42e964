"""The demo's outcome, printed when it ends (and written as JSON on request)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChaosEvent:
    """One SIGKILL of an instance and the start of its replacement."""

    service: str
    instance_id: str
    pid: int
    at_s: float
    """Seconds after the traffic started."""
    replacement_pid: int
    replacement_id: str = ""
    replacement_serving_after_s: float | None = None


@dataclass
class DemoSummary:
    """What the demo did: end-to-end calls by the traffic generator, server-side totals, chaos."""

    seconds: float = 0.0
    registry_url: str = ""
    instances_started: int = 0
    calls: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    by_operation: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    server_calls: int | None = None
    server_errors: int | None = None
    """From the instances' metrics endpoints; ``None`` when none exposed metrics."""
    chaos: list[ChaosEvent] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    """Every process the demo started (all stopped by the time the summary is printed)."""
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        """The summary as plain text lines."""

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} ms"

        ops = ", ".join(f"{name} {count}" for name, count in sorted(self.by_operation.items()))
        errors = ", ".join(f"{code} {count}" for code, count in sorted(self.errors.items())) or "none"
        lines = [
            f"demo summary ({'interrupted' if self.interrupted else 'finished'} after {self.seconds:.1f}s, "
            f"{self.instances_started} instance processes started)",
            f"  calls: {self.calls} ({ops or 'none'})",
            f"  failed calls: {self.failed} (errors: {errors})",
            f"  latency end to end: p50 {ms(self.p50_ms)}, p99 {ms(self.p99_ms)}",
            f"  server side: {self.server_calls} calls handled, {self.server_errors} errors"
            if self.server_calls is not None
            else "  server side: no instance exposed metrics (metrics.enabled is false?)",
        ]
        if not self.chaos:
            lines.append("  chaos: no instance was killed")
        for event in self.chaos:
            after = event.replacement_serving_after_s
            lines.append(
                f"  chaos: killed {event.service} {event.instance_id[:8]} (pid {event.pid}) with SIGKILL at "
                f"{event.at_s:.1f}s;\n         replacement "
                f"{event.replacement_id[:8] or 'pid ' + str(event.replacement_pid)} "
                + (f"SERVING after {after:.1f}s" if after is not None else "not SERVING yet")
            )
        return lines
