"""The one retry delay every reconnecting loop in grpcmesh uses: capped exponential, equal jitter.

Equal jitter (as in the AWS Architecture Blog's "Exponential Backoff And Jitter"): the n-th
delay in a row is drawn uniformly from ``[ceiling / 2, ceiling]`` where ``ceiling =
min(maximum, initial * 2**n)``. Half of each delay is fixed, so a loop that keeps failing at
once (a corrupt record, a bug) never spins, and the other half is random, so many processes
that lost the same registry at the same moment do not retry in lockstep.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "equal_jitter_delay"]


def equal_jitter_delay(attempt: int, initial: float, maximum: float) -> float:
    """Delay before retry number ``attempt`` (0 for the first): uniform in ``[ceiling / 2, ceiling]``."""
    ceiling = min(maximum, initial * 2.0 ** min(max(attempt, 0), 62))
    return random.uniform(ceiling / 2, ceiling)


@dataclass
class Backoff:
    """Delays for one retrying loop: :meth:`next_delay` grows them, :meth:`reset` after a success."""

    initial: float = 0.1
    maximum: float = 5.0
    attempts: int = field(default=0, init=False)
    """Failures since the last :meth:`reset` (0 while the loop is healthy)."""

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {self.initial} and {self.maximum}")

    def next_delay(self) -> float:
        delay = equal_jitter_delay(self.attempts, self.initial, self.maximum)
        self.attempts += 1
        return delay

    async def sleep(self) -> None:
        """Wait :meth:`next_delay` seconds."""
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self.attempts = 0
