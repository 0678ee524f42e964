"""One registry watch per service, shared, with hostnames resolved to IPs."""

from __future__ import annotations

import asyncio

from grpcmesh import ServiceInstance, open_registry
from grpcmesh.xds.watches import RegistryWatches, resolve_addresses


async def test_hostnames_become_ips_and_unresolvable_ones_are_dropped() -> None:
    named = ServiceInstance(name="svc", id="named", address="localhost", port=1000)
    ip = ServiceInstance(name="svc", id="ip", address="10.1.2.3", port=1001)
    bogus = ServiceInstance(name="svc", id="bogus", address="no-such-host.invalid", port=1002)
    resolved = await resolve_addresses([named, ip, bogus])
    assert [i.id for i in resolved] == ["named", "ip"]
    assert resolved[0].address in {"127.0.0.1", "::1"}
    assert resolved[1] == ip


async def test_watch_is_shared_and_stops_with_its_last_subscriber() -> None:
    async with open_registry("memory://xds-watches") as registry:
        watches = RegistryWatches(registry)
        first: asyncio.Queue[str] = asyncio.Queue()
        second: asyncio.Queue[str] = asyncio.Queue()
        watches.subscribe("svc", first.put_nowait)
        watches.subscribe("svc", second.put_nowait)
        assert watches.watched == {"svc"}
        assert await asyncio.wait_for(first.get(), 5) == "svc"  # the initial (empty) snapshot
        await asyncio.wait_for(second.get(), 5)
        assert watches.endpoints("svc") == []

        await registry.register(ServiceInstance(name="svc", id="a", address="127.0.0.1", port=1000))
        await asyncio.wait_for(first.get(), 5)
        assert [i.id for i in watches.endpoints("svc") or []] == ["a"]

        watches.unsubscribe("svc", first.put_nowait)
        assert watches.watched == {"svc"}
        watches.unsubscribe("svc", second.put_nowait)
        assert watches.watched == set()
        assert watches.endpoints("svc") is None
        await watches.close()
