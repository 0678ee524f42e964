"""Every code block in README.md runs as shown, so a README that drifts from the code fails the tests.

Conventions (the README's authors follow them; see the "README rules" of the project):

* a ```python block runs as a script in a fresh temp dir, with grpcmesh importable, after the
  ``<!-- file: NAME -->`` blocks of the same ``##`` section that come before it are written there;
* ``<!-- file: NAME -->`` right before a block writes that block to ``NAME`` instead of running it;
* ``<!-- fragment -->`` right before a block marks it as not runnable on its own: a python
  fragment is only compiled (top-level ``await`` allowed), any other fragment is skipped;
* in ```console / ```sh blocks, ``$ grpcmesh ...`` lines are run against the CLI when they end by
  themselves (``ls``, ``xds bootstrap``, ``certs dev``, ``--help``); for commands that run until
  stopped or need running services (``demo``, ``dashboard``, ``xds serve``, ``call``...), the
  command's ``--help`` must exist and list every ``--option`` the line uses.

Each test is named after the README line its block starts on, and failures say that line.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import python_env

README = Path(__file__).resolve().parent.parent / "README.md"

BLOCK_TIMEOUT = 120.0
"""Seconds one block may run; generous for a loaded 2-core machine (blocks take a few seconds)."""

RUNNABLE_COMMANDS = (("ls",), ("xds", "bootstrap"), ("certs", "dev"))
"""CLI commands a README line may run for real: they end by themselves and need no running service."""

_MARKER = re.compile(r"^<!--\s*(file:\s*(?P<file>[^\s]+)|(?P<fragment>fragment))\s*-->\s*$")
_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int
    """1-based line of the opening fence."""
    lang: str
    text: str
    section: str
    file: str | None = None
    fragment: bool = False

    @property
    def where(self) -> str:
        return f"README.md line {self.line} ({self.lang} block in '{self.section}')"


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with their markers and ``##`` section."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section = "(top)"
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = _FENCE.match(line)
        if fence is None:
            index += 1
            continue
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].rstrip() != "```":
            body.append(lines[index])
            index += 1
        previous = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marker = _MARKER.match(previous)
        blocks.append(
            Block(
                line=start + 1,
                lang=fence["lang"],
                text="\n".join(body) + "\n",
                section=section,
                file=marker["file"] if marker else None,
                fragment=bool(marker and marker["fragment"]),
            )
        )
        index += 1
    return blocks


BLOCKS = parse_blocks(README.read_text(encoding="utf-8"))


def cli_lines(block: Block) -> list[tuple[int, list[str]]]:
    """``(README line, argv)`` of every ``$ grpcmesh ...`` line (continuations joined, comments cut)."""
    found: list[tuple[int, list[str]]] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        line, number = lines[index].strip(), block.line + 1 + index
        while line.endswith("\\") and index + 1 < len(lines):
            index += 1
            line = line[:-1] + " " + lines[index].strip()
        index += 1
        if line.startswith("$ grpcmesh"):
            argv = shlex.split(line[2:], comments=True)
            found.append((number, argv))
    return found


def block_env(workdir: Path) -> dict[str, str]:
    """The environment of a block: grpcmesh importable, every default path inside ``workdir``."""
    env = python_env()
    for variable in list(env):
        if variable.startswith("GRPCMESH_"):
            del env[variable]
    env.update(HOME=str(workdir), XDG_DATA_HOME=str(workdir / "data"), PYTHONUNBUFFERED="1")
    return env


def write_section_files(block: Block, workdir: Path) -> None:
    for other in BLOCKS:
        if other.section == block.section and other.file is not None and other.line < block.line:
            target = workdir / other.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(other.text)


def run(argv: list[str], workdir: Path, where: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, cwd=workdir, env=block_env(workdir), capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{where}: still running after {BLOCK_TIMEOUT:g} s (blocks must end by themselves): {exc}")


PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python" and b.file is None]
CLI_BLOCKS = [b for b in BLOCKS if b.lang in ("console", "sh", "shell", "bash") and cli_lines(b)]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"line-{b.line}" for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    if block.fragment:
        try:
            # A fragment may await at top level (it stands for the inside of a coroutine).
            compile(block.text, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"{block.where}: fragment does not compile: {exc}")
        return
    write_section_files(block, tmp_path)
    script = tmp_path / f"readme_line_{block.line}.py"
    script.write_text(block.text)
    out = run([sys.executable, script.name], tmp_path, block.where)
    assert out.returncode == 0, (
        f"{block.where} exited {out.returncode}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}"
    )


def _grpcmesh(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", "from grpcmesh._console import main; main()", *argv[1:]]


def _command(argv: list[str]) -> tuple[str, ...]:
    words = [word for word in argv[1:] if not word.startswith("-")]
    for runnable in RUNNABLE_COMMANDS:
        if tuple(words[: len(runnable)]) == runnable:
            return runnable
    return tuple(words[:2]) if words[:1] == ["xds"] else tuple(words[:1])


@pytest.mark.parametrize("block", CLI_BLOCKS, ids=[f"line-{b.line}" for b in CLI_BLOCKS])
def test_cli_lines(block: Block, tmp_path: Path) -> None:
    write_section_files(block, tmp_path)
    for number, argv in cli_lines(block):
        where = f"README.md line {number}: {shlex.join(argv)}"
        command = _command(argv)
        if command in RUNNABLE_COMMANDS or "--help" in argv:
            out = run(_grpcmesh(argv), tmp_path, where)
            assert out.returncode == 0, f"{where} exited {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
            continue
        out = run(_grpcmesh(["grpcmesh", *command, "--help"]), tmp_path, where)
        assert out.returncode == 0, f"{where}: `grpcmesh {' '.join(command)} --help` failed:\n{out.stderr[-2000:]}"
        for option in (word.split("=")[0] for word in argv if word.startswith("--")):
            assert option in out.stdout, f"{where}: option {option} is not in `grpcmesh {' '.join(command)} --help`"


def test_markers_name_real_blocks() -> None:
    """A marker must sit right before a fence, or it silently marks nothing."""
    lines = README.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if _MARKER.match(line.strip()):
            following = next((item for item in lines[index + 1 :] if item.strip()), "")
            assert _FENCE.match(following), f"README.md line {index + 1}: marker not followed by a code block"


def test_every_block_is_covered() -> None:
    """Languages the README may use; a new one needs a decision here (run it, or mark it)."""
    known = {"python", "console", "sh", "shell", "bash", "yaml", "proto", "text", "go", "java", ""}
    unknown = [(b.line, b.lang) for b in BLOCKS if b.lang not in known]
    assert not unknown, f"README blocks in languages this test does not handle: {unknown}"
    assert os.path.isfile(README)


FIRST_SERVICE = "Your first service"


def _first_service_commands() -> list[list[str]]:
    """The section's ``$ python ...`` lines, in order, as argv (comments cut)."""
    commands: list[list[str]] = []
    for block in BLOCKS:
        if block.section == FIRST_SERVICE and block.lang == "console":
            for line in block.text.splitlines():
                if line.strip().startswith("$ python"):
                    commands.append(shlex.split(line.strip()[2:], comments=True))
    return commands


async def _wait_for_line(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"the server exited before printing {marker!r}; it printed:\n{''.join(seen)}")
        line = raw.decode(errors="replace")
        seen.append(line)
        if marker in line:
            return line


async def test_your_first_service_as_a_user_runs_it(tmp_path: Path) -> None:
    """The walkthrough: generate code as shown, two servers, the client reaches both; lifecycle lines print."""
    commands = _first_service_commands()
    assert [c[1:2] for c in commands] == [["-m"], ["server.py"], ["server.py"], ["client.py"]], commands
    protoc, server_argv, _, client_argv = commands
    last = max(b.line for b in BLOCKS if b.section == FIRST_SERVICE)
    write_section_files(Block(line=last + 1, lang="", text="", section=FIRST_SERVICE), tmp_path)
    out = run([sys.executable, *protoc[1:]], tmp_path, f"README.md '{FIRST_SERVICE}': {shlex.join(protoc)}")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "greeter_pb2_grpc.py").is_file()

    env = block_env(tmp_path)
    servers = [
        await asyncio.create_subprocess_exec(
            sys.executable, *server_argv[1:], cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    logs: list[list[str]] = [[], []]
    try:
        for server, seen in zip(servers, logs, strict=True):
            assert server.stderr is not None
            line = await asyncio.wait_for(_wait_for_line(server.stderr, "registered as", seen), BLOCK_TIMEOUT)
            assert "greeter listening on 127.0.0.1:" in line, line
        client = await asyncio.to_thread(
            run, [sys.executable, *client_argv[1:]], tmp_path, f"README.md '{FIRST_SERVICE}': client"
        )
        assert client.returncode == 0, client.stderr
        pids = {f"process {server.pid})" for server in servers}
        replies = client.stdout.splitlines()
        assert len(replies) == 4, client.stdout
        assert {p for p in pids if any(p in reply for reply in replies)} == pids, (pids, client.stdout)
    finally:
        for server in servers:
            if server.returncode is None:
                server.send_signal(signal.SIGTERM)
        for server, seen in zip(servers, logs, strict=True):
            assert server.stderr is not None
            rest = await asyncio.wait_for(server.stderr.read(), BLOCK_TIMEOUT)
            await server.wait()
            seen.append(rest.decode(errors="replace"))
    for seen in logs:
        text = "".join(seen)
        assert "deregistered" in text, text
        assert "greeter stopped" in text, text
