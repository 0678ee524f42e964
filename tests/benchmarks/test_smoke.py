"""Smoke runs of every benchmark with tiny sizes, so the scripts cannot rot unnoticed.

The numbers of a smoke run mean nothing; what is checked is that each script runs end to end
against real servers and registries, produces its table rows with real (not NaN) values and
the command that reproduces them, and leaves no child process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

from run_all import SCRIPTS, render  # noqa: E402

EXPECTED_FIGURES = {
    "bench_overhead.py": "1. call overhead",
    "bench_propagation.py": "2. propagation",
    "bench_failover.py": "3. failover",
    "bench_registry_scale.py": "4. registry scale",
    "bench_balancers.py": "5. pick cost",
    "bench_import.py": "6. import time",
    "bench_xds.py": "7. xDS",
    "bench_dashboard_memory.py": "8. dashboard memory",
}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_run_all_lists_every_benchmark_script() -> None:
    on_disk = {p.name for p in BENCH.glob("bench_*.py")}
    assert {script for script, _ in SCRIPTS} == on_disk
    assert sum(budget for _, budget in SCRIPTS) < 900, "make bench must stay under 15 minutes"


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("script", sorted(EXPECTED_FIGURES))
def test_benchmark_smoke(script: str, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert rows, f"{script} produced no figure"
    for row in rows:
        assert row["figure"].startswith(EXPECTED_FIGURES[script])
        assert row["goal"]
        assert row["measured"]
        assert "nan" not in row["measured"].lower(), row
        assert row["command"] == f".venv/bin/python benchmarks/{script}"
        assert row["met"] in (True, False, None)
    assert result["section"], "the details section is empty"
    assert children_of(os.getpid()) == [], "a benchmark left a child process running"
    page = render([result], {"cpus": "2", "python": "3", "grpcio": "1", "platform": "linux", "uvloop": "0"}, 1.0)
    assert f"`.venv/bin/python benchmarks/{script}`" in page
    assert "| figure | goal | measured | met | command |" in page
