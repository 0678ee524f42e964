"""Smoke run of the instruction-count benchmark (valgrind's callgrind, installed by the test setup):
it counts the measured calls of a real server process, and the mesh's stack costs more than bare."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_instruction_counts_of_a_real_server_rank_the_stacks() -> None:
    script = ROOT / "benchmarks" / "instructions_per_call.py"
    done = subprocess.run(
        [sys.executable, str(script), "--stacks", "bare,full", "--calls", "40"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    counts = dict(re.findall(r"^\s+(\w+)\s+([\d.]+)k", done.stdout, re.MULTILINE))
    assert set(counts) == {"bare", "full"}, done.stdout
    assert 50 < float(counts["bare"]) < float(counts["full"]), done.stdout
