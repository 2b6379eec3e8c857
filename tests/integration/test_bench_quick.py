"""`python -m bench --quick` runs end to end and writes its table. Only that it runs: benchmarks are not tests, so
nothing here looks at how long anything took (see bench/ and STYLE.md).

P7 is left out: it starts `dagster dev` on a demo backlog (minutes even when quick), and the browser test
(tests/e2e) already drives the very same stack (`devstack.dagster_dev`)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from pipeline.core.settings import REPO_ROOT

#: The goals are set for the default configuration, fast paths on (P1 and P2 time them): with them off (CI's second
#: run, which checks the pipeline's behaviour on public APIs) this smoke run would time what no goal is about.
pytestmark = [pytest.mark.integration, pytest.mark.fastpaths]

QUICK_REPORT = REPO_ROOT / "bench" / "results" / "quick.md"
CASES = ("p1", "p2", "p3", "p4", "p5", "p6")


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of the results table's body rows (`| case | what | ours | baseline | ratio | goal | result |`)."""
    rows = []
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 7 and cells[0] in CASES:
            rows.append(cells)
    return rows


def test_quick_bench_runs_every_case_and_writes_ratios():
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--cases", ",".join(CASES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )

    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    assert QUICK_REPORT.stat().st_mtime >= started - 1, "bench/results/quick.md was not rewritten"
    rows = table_rows(QUICK_REPORT.read_text(encoding="utf-8"))
    assert {row[0] for row in rows} == set(CASES), rows
    for case, what, _ours, _baseline, ratio, goal, verdict in rows:
        assert re.fullmatch(r"\d+\.\d+", ratio), f"{case} {what}: ratio {ratio!r} is not a number"
        assert float(ratio) > 0
        assert verdict in ("pass", "miss", "info"), verdict  # a miss is a finding, not a failure
        assert (verdict == "info") == (goal == "—")
    assert rows[0][0] in result.stdout  # the table is printed too
