"""Smoke runs of the call-semantics benchmarks (``benchmarks/calls_*.py``), tiny sizes.

They are run one by one (their commands are in BENCHMARKS.md), not by ``make bench``; this
checks each still runs end to end against real server processes, reports real numbers and
leaves no child process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.test_smoke import children_of

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

from calls_all import SCRIPTS  # noqa: E402


def test_calls_all_runs_every_call_semantics_benchmark() -> None:
    assert set(SCRIPTS) == {p.name for p in BENCH.glob("calls_*.py")} - {"calls_all.py"}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", SCRIPTS)
def test_call_semantics_benchmark_smoke(script: str, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["rows"], f"{script} produced no figure"
    for row in result["rows"]:
        assert row["goal"]
        assert row["measured"]
        assert "nan" not in row["measured"].lower(), row
        assert row["command"].startswith(f".venv/bin/python benchmarks/{script}")
    assert result["section"]
    assert children_of(os.getpid()) == []
