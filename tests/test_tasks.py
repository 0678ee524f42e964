"""cancel_and_wait: every task is cancelled and finished before it returns."""

from __future__ import annotations

import asyncio

from grpcmesh._tasks import cancel_and_wait


async def test_cancels_all_waits_for_each_and_skips_none() -> None:
    cleaned: list[int] = []

    async def worker(n: int) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits must run to the end
            cleaned.append(n)

    tasks = [asyncio.create_task(worker(n)) for n in range(3)]
    await asyncio.sleep(0)
    await cancel_and_wait([tasks[0], None, tasks[1], tasks[2]])
    assert all(task.cancelled() for task in tasks)
    assert sorted(cleaned) == [0, 1, 2]
