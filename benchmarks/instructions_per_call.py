"""Instructions per unary call (valgrind callgrind): the one cost figure this shared machine repeats.

Throughput and CPU time per call move by ±10% between runs here; an instruction count repeats
within ~0.5%, so it is what tells a 2% change apart. For each ``--stack`` (the configurations
of ``bench_overhead.py``: ``bare``, ``mesh``, ``empty``, ``full``, ``tracing``, ``logging``,
``metrics``, ``auth``) one side runs under callgrind, the other as a normal process:

* ``--side server`` (default): the echo server under callgrind, driven by a mesh channel with the
  same concerns; counts every thread of the server process;
* ``--side client``: the client process under callgrind, against a normal echo server.

Counting starts after a warm-up (``callgrind_control -z``) and stops after ``--calls`` calls
(16 in flight). Counts include grpc's own C code: compare stacks with each other (``bare``
is the baseline), not with other machines. Needs Debian's ``valgrind`` (``apt-get install valgrind``)::

    .venv/bin/python benchmarks/instructions_per_call.py --stacks bare,mesh,full --rate 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import BENCH_DIR, ROOT, child_env

IN_FLIGHT = 16
SERVER_STACK = {"bare": "none", "mesh": "none"}
"""Client stack -> the echo server's ``--stack`` (the plain server for the two without concerns)."""


async def _drive(port: int, stack: str, rate: float, calls: int, pid: int) -> None:
    """Warm up, zero the counters of ``pid``, make ``calls`` calls, dump the counters."""
    import grpc
    from _middleware import client_observer
    from cpu_per_call import load

    from grpcmesh import ServiceInstance, open_registry
    from grpcmesh.client import MeshChannel
    from grpcmesh.protos import echo_pb2_grpc

    registry = open_registry("memory://instructions")
    await registry.register(ServiceInstance(name="echo", id="echo", address="127.0.0.1", port=port))
    if stack == "bare":
        channel: grpc.aio.Channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    elif stack in ("mesh", "empty"):
        channel = MeshChannel(registry, "echo")
    else:
        channel = MeshChannel(registry, "echo", observer=client_observer(stack, rate))
    stub = echo_pb2_grpc.EchoStub(channel)

    async def control(flag: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "callgrind_control", flag, str(pid), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        if await proc.wait() != 0:
            raise RuntimeError(f"callgrind_control {flag} {pid} failed")

    await load(stub, 300, IN_FLIGHT)
    await control("-z")  # count from here...
    await load(stub, calls, IN_FLIGHT)
    await control("-d")  # ...to here: the dump <out>.1
    await channel.close()
    await registry.close()


def _total(out: Path) -> int:
    """The instruction total of the measured calls: the dump ``callgrind_control -d`` wrote (``<out>.1``)."""
    dump = out.with_name(out.name + ".1")
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def _callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no", "-q"]


def measure(stack: str, rate: float, calls: int, side: str, workdir: Path) -> float:
    out = workdir / f"{side}-{stack}.out"
    server_args = [
        str(BENCH_DIR / "_echo_server.py"),
        "--instance-id",
        f"instr-{stack}",
        "--stack",
        SERVER_STACK.get(stack, stack),
        "--sample-rate",
        str(rate),
    ]
    prefix = _callgrind(out) if side == "server" else []
    server = subprocess.Popen([*prefix, sys.executable, *server_args], stdout=subprocess.PIPE, env=child_env())
    try:
        assert server.stdout is not None
        port = int(json.loads(server.stdout.readline())["port"])  # the server's one JSON line
        if side == "server":
            asyncio.run(_drive(port, stack, rate, calls, server.pid))
        else:
            driver = [sys.executable, __file__, "--drive", f"{port},{stack},{rate},{calls}"]
            subprocess.run([*_callgrind(out), *driver], check=True, env=child_env())
    finally:
        server.terminate()
        server.wait(30)
    time.sleep(0.2)  # callgrind writes its final file as the process exits
    return _total(out) / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stacks", default="bare,mesh,full", help="comma-separated: bare,mesh,empty,full,tracing,...")
    p.add_argument("--rate", type=float, default=0.1, help="tracing sample rate of the stacks that trace")
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--side", choices=["server", "client"], default="server")
    p.add_argument("--keep", type=Path, help="keep the callgrind files here (for callgrind_annotate)")
    p.add_argument("--drive", help=argparse.SUPPRESS)  # internal: the client process under callgrind
    args = p.parse_args()
    if args.drive:
        port, stack, rate, calls = args.drive.split(",")
        asyncio.run(_drive(int(port), stack, float(rate), int(calls), os.getpid()))
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("instructions_per_call.py needs valgrind: apt-get install valgrind")
    print(f"{args.side} instructions per unary call ({args.calls} calls, 16 in flight; {ROOT.name})")
    with contextlib.ExitStack() as stack_:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        else:
            tmp = stack_.enter_context(tempfile.TemporaryDirectory(prefix="grpcmesh-instr-"))
        baseline = None
        for stack in filter(None, args.stacks.split(",")):
            per_call = measure(stack, args.rate, args.calls, args.side, Path(tmp))
            baseline = baseline or per_call
            print(f"  {stack:10s} {per_call / 1000:8.1f}k  ({per_call / baseline:.3f}x the first)", flush=True)


if __name__ == "__main__":
    main()
