"""xDS: registry change -> grpcio's own xDS client calls the new endpoint; xds:/// vs plain channel calls/s.

Propagation: a plain grpcio client (a child process that never imports grpcmesh) calls
``xds:///bench-echo`` in a tight loop and reports the wall-clock time it first got a reply
from each instance id. The benchmark registers a new Echo server (and deregisters the
previous one) per change; latency = first reply from the new instance - start of
``register``. It includes the registry's own propagation (SQLite polls every 50 ms), the
ADS push, the client's EDS update, the connection to the new endpoint and one call.
Baseline, side by side: a grpcmesh registry watch in this process seeing the same change
(the floor any control plane on this registry has).

Isolation: the time from a registry change to the EDS push a raw ADS stream subscribed to one
service receives, alone and while another stream subscribes to BIG_NAMES names (the case
where every change used to rebuild every resource of the big stream), memory registry.

Throughput: one child process, one thread, sequential unary calls to the same single Echo
server through ``xds:///bench-echo`` and through a plain ``127.0.0.1:PORT`` channel, in
interleaved rounds; calls/s and client CPU per call (``time.process_time``) for each.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from _harness import ROOT, Report, Row, command, median, ms, parser, percentile, run

from grpcmesh import Registry, ServiceInstance, open_registry
from grpcmesh.testing import start_echo_server
from grpcmesh.xds import Limits, XdsPolicies, XdsServer
from grpcmesh.xds.protos import ads_stream, message
from grpcmesh.xds.resources import ENDPOINT_TYPE

SCRIPT = "bench_xds.py"
SERVICE = "bench-echo"

CLIENT = r"""
import sys, time
import grpc
import echo_pb2, echo_pb2_grpc

assert "grpcmesh" not in sys.modules
mode = sys.argv[1]
request = echo_pb2.EchoRequest(message="x")
if mode == "watch":
    seen = set()
    with grpc.insecure_channel("xds:///bench-echo") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        print("STARTED", flush=True)
        deadline = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < deadline:
            try:
                reply = stub.Unary(request, timeout=10, wait_for_ready=True)
            except grpc.RpcError:
                continue
            if reply.instance_id not in seen:
                seen.add(reply.instance_id)
                print("NEW", reply.instance_id, repr(time.time()), flush=True)
else:
    port, rounds, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    channels = {"plain": grpc.insecure_channel(f"127.0.0.1:{port}"), "xds": grpc.insecure_channel("xds:///bench-echo")}
    stubs = {kind: echo_pb2_grpc.EchoStub(ch) for kind, ch in channels.items()}
    for stub in stubs.values():
        for _ in range(200):
            stub.Unary(request, timeout=30, wait_for_ready=True)
    for _ in range(rounds):
        for kind, stub in stubs.items():
            calls, cpu, end = 0, time.process_time(), time.monotonic() + seconds
            while time.monotonic() < end:
                stub.Unary(request, timeout=10)
                calls += 1
            print("ROUND", kind, calls, repr(time.process_time() - cpu), repr(seconds), flush=True)
    print("DONE", flush=True)
"""


def client_dir(base: Path) -> Path:
    out = base / "client"
    out.mkdir()
    shutil.copy(ROOT / "src" / "grpcmesh" / "protos" / "echo.proto", out / "echo.proto")
    (out / "client.py").write_text(CLIENT)
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{out}", f"--python_out={out}"]
    subprocess.run([*protoc, f"--grpc_python_out={out}", "echo.proto"], check=True)
    return out


async def start_client(folder: Path, bootstrap: Path, *args: str) -> asyncio.subprocess.Process:
    env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(folder / "client.py"), *args, stdout=asyncio.subprocess.PIPE, env=env, cwd=folder
    )


async def line_with(proc: asyncio.subprocess.Process, marker: str, timeout: float = 60.0) -> str:
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode()
        if not line:
            raise RuntimeError(f"client exited before {marker!r}")
        if marker in line:
            return line


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await proc.wait()


async def propagation(base: Path, folder: Path, changes: int) -> tuple[list[float], list[float]]:
    url = f"sqlite:///{base / 'propagation.db'}"
    async with open_registry(url) as registry, open_registry(url) as observer, XdsServer(url) as plane:
        bootstrap = base / "bootstrap.json"
        bootstrap.write_text(plane.bootstrap_json(node_id="bench-xds"))
        servers = []
        server, port = await start_echo_server("i0")
        servers.append(server)
        previous = ServiceInstance(name=SERVICE, id="i0", address="127.0.0.1", port=port)
        await registry.register(previous)
        client = await start_client(folder, bootstrap, "watch", "600")
        watch = observer.watch(SERVICE)
        xds_delays: list[float] = []
        watch_delays: list[float] = []
        try:
            await line_with(client, "STARTED")
            await line_with(client, "NEW i0")
            async for snapshot in watch:
                if any(inst.id == "i0" for inst in snapshot):
                    break
            for change in range(1, changes + 1):
                server, port = await start_echo_server(f"i{change}")
                servers.append(server)
                added = ServiceInstance(name=SERVICE, id=f"i{change}", address="127.0.0.1", port=port)
                await asyncio.sleep(0.2)
                started_wall, started = time.time(), time.monotonic()
                await registry.register(added)
                async for snapshot in watch:
                    if any(inst.id == added.id for inst in snapshot):
                        watch_delays.append(time.monotonic() - started)
                        break
                line = await line_with(client, f"NEW {added.id} ")
                xds_delays.append(float(line.split()[2]) - started_wall)
                await registry.deregister(previous)
                previous = added
        finally:
            await stop(client)
            for server in servers:
                await server.stop(None)
    return xds_delays, watch_delays


async def throughput(base: Path, folder: Path, rounds: int, seconds: float) -> dict[str, list[tuple[float, float]]]:
    url = f"sqlite:///{base / 'throughput.db'}"
    server, port = await start_echo_server("only")
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "xds": []}
    try:
        async with open_registry(url) as registry, XdsServer(url) as plane:
            await registry.register(ServiceInstance(name=SERVICE, id="only", address="127.0.0.1", port=port))
            bootstrap = base / "bootstrap-rate.json"
            bootstrap.write_text(plane.bootstrap_json(node_id="bench-xds-rate"))
            client = await start_client(folder, bootstrap, "rate", str(port), str(rounds), str(seconds))
            try:
                while True:
                    line = await line_with(client, "", timeout=120)
                    if line.startswith("DONE"):
                        break
                    if line.startswith("ROUND"):
                        _, kind, calls, cpu, spent = line.split()
                        results[kind].append((int(calls) / float(spent), float(cpu) / int(calls)))
            finally:
                await stop(client)
    finally:
        await server.stop(None)
    return results


class RawStream:
    """A hand-driven ADS stream (requests in, responses out), as an xDS client would hold one."""

    def __init__(self, channel: grpc.aio.Channel, node: str) -> None:
        self.requests: asyncio.Queue[object] = asyncio.Queue()
        self.node = node
        self.call = ads_stream(channel)(self._feed())

    async def _feed(self) -> AsyncIterator[object]:
        while True:
            yield await self.requests.get()

    def send(self, names: list[str], ack_of: object = None) -> None:
        request = message("envoy.service.discovery.v3.DiscoveryRequest")(type_url=ENDPOINT_TYPE, resource_names=names)
        request.node.id = self.node
        if ack_of is not None:
            request.response_nonce = ack_of.nonce  # type: ignore[attr-defined]
            request.version_info = ack_of.version_info  # type: ignore[attr-defined]
        self.requests.put_nowait(request)


async def push_delays(registry: Registry, channel: grpc.aio.Channel, changes: int, tag: str) -> list[float]:
    small = RawStream(channel, "small")
    small.send(["svc-1"])
    response = await small.call.read()
    small.send(["svc-1"], ack_of=response)
    delays = []
    for change in range(changes):
        started = time.monotonic()
        added = ServiceInstance(name="svc-1", id=f"{tag}{change}", address="127.0.0.1", port=2000 + change)
        await registry.register(added)
        response = await asyncio.wait_for(small.call.read(), 30)
        delays.append(time.monotonic() - started)
        small.send(["svc-1"], ack_of=response)
    small.call.cancel()
    return delays


async def isolation(big_names: int, changes: int) -> tuple[list[float], list[float], float]:
    policies = XdsPolicies(limits=Limits(max_names_per_stream=big_names))
    async with open_registry("memory://") as registry, XdsServer(registry, policies=policies) as plane:
        watches = plane.watches
        assert watches is not None
        for i in range(50):
            await registry.register(ServiceInstance(name=f"svc-{i}", id=f"i{i}", address="127.0.0.1", port=1000 + i))
        async with grpc.aio.insecure_channel(plane.address) as channel:
            alone = await push_delays(registry, channel, changes, "alone-")
            big = RawStream(channel, "big")
            names = [f"svc-{i}" for i in range(big_names)]
            started = time.monotonic()
            big.send(names)

            async def ack_all() -> None:
                async for response in big.call:
                    big.send(names, ack_of=response)

            acker = asyncio.get_running_loop().create_task(ack_all())
            while len(watches.watched) < big_names:
                await asyncio.sleep(0.05)
            subscribed = time.monotonic() - started
            await asyncio.sleep(1.0)
            beside_big = await push_delays(registry, channel, changes, "beside-")
            big.call.cancel()
            acker.cancel()
            await asyncio.gather(acker, return_exceptions=True)
    return alone, beside_big, subscribed


async def main(args: argparse.Namespace, report: Report) -> None:
    changes = 3 if args.smoke else args.changes
    rounds, seconds = (1, 0.3) if args.smoke else (args.rounds, args.seconds)
    with tempfile.TemporaryDirectory(prefix="bench-xds-") as tmp:
        base = Path(tmp)
        folder = client_dir(base)
        xds_delays, watch_delays = await propagation(base, folder, changes)
        rates = await throughput(base, folder, rounds, seconds)
    big_names = 500 if args.smoke else args.big_names
    alone, beside_big, subscribed = await isolation(big_names, 5 if args.smoke else 10)

    report.line(f"### xDS: {changes} registry changes (sqlite), grpcio xDS client in a child process")
    report.line()
    report.table(
        ["path", "p50", "p99", "max", "samples"],
        [
            [
                "registry -> grpcio xds:/// client's first reply from the new instance",
                ms(median(xds_delays)),
                ms(percentile(xds_delays, 99)),
                ms(max(xds_delays)),
                len(xds_delays),
            ],
            [
                "baseline: registry -> a grpcmesh watch in the benchmark process",
                ms(median(watch_delays)),
                ms(percentile(watch_delays, 99)),
                ms(max(watch_delays)),
                len(watch_delays),
            ],
        ],
    )
    plain = median([rate for rate, _ in rates["plain"]])
    xds = median([rate for rate, _ in rates["xds"]])
    plain_cpu = median([cpu for _, cpu in rates["plain"]])
    xds_cpu = median([cpu for _, cpu in rates["xds"]])
    report.line(f"### xDS: sequential unary calls, one thread, {rounds} interleaved rounds of {seconds:g} s")
    report.line()
    report.table(
        ["channel", "calls/s (median)", "client CPU/call", "rounds"],
        [
            [
                "plain 127.0.0.1:PORT",
                f"{plain:.0f}",
                f"{plain_cpu * 1e6:.0f} µs",
                [f"{r:.0f}" for r, _ in rates["plain"]],
            ],
            ["xds:///bench-echo", f"{xds:.0f}", f"{xds_cpu * 1e6:.0f} µs", [f"{r:.0f}" for r, _ in rates["xds"]]],
        ],
    )
    report.add(
        Row(
            "7. xDS propagation, sqlite: registry change -> grpcio xds:/// client calls the new instance",
            "no number in the issue; p99 reported",
            f"p50 {ms(median(xds_delays))}, p99 {ms(percentile(xds_delays, 99))} over {len(xds_delays)} changes "
            f"(baseline grpcmesh watch of the same change: p99 {ms(percentile(watch_delays, 99))})",
            None,
            command(SCRIPT),
        )
    )
    report.line(f"### xDS: change -> push to a 1-name stream, alone and beside a {big_names}-name stream (memory)")
    report.line()
    report.table(
        ["case", "p50", "p99", "samples"],
        [
            ["alone", ms(median(alone)), ms(percentile(alone, 99)), len(alone)],
            [
                f"beside a stream of {big_names} names",
                ms(median(beside_big)),
                ms(percentile(beside_big, 99)),
                len(beside_big),
            ],
        ],
    )
    report.line(f"(the {big_names}-name subscription itself took {subscribed:.1f} s to be fully watched)")
    report.line()
    report.add(
        Row(
            f"7. xDS isolation: change -> push to another client while one stream holds {big_names} names",
            "no number in the issue (it saw 5-14 s); ratio reported",
            f"p50 {ms(median(beside_big))}, p99 {ms(percentile(beside_big, 99))} (alone: p50 {ms(median(alone))}, "
            f"p99 {ms(percentile(alone, 99))})",
            None,
            command(SCRIPT),
        )
    )
    report.add(
        Row(
            "7. xDS calls/s, grpcio xds:/// vs plain channel to the same server",
            "no number in the issue; ratio reported",
            f"{xds / plain:.3f}x ({xds:.0f} vs {plain:.0f} calls/s); client CPU/call {xds_cpu / plain_cpu:.2f}x",
            None,
            command(SCRIPT),
        )
    )


if __name__ == "__main__":
    cli = parser(__doc__ or SCRIPT)
    cli.add_argument("--changes", type=int, default=15, help="registry changes to time")
    cli.add_argument("--rounds", type=int, default=4, help="interleaved throughput rounds per channel")
    cli.add_argument("--seconds", type=float, default=0.6, help="seconds per throughput round")
    cli.add_argument("--big-names", type=int, default=10_000, help="names the big stream subscribes to")
    run(main, cli.parse_args(), SCRIPT)
