"""Child processes the cases time or prepare with: a Python script in a fresh interpreter, `dbt` commands.

A fresh process per repetition keeps import caches and module state of one repetition out of the next. Each child
is timed by the wall clock and by the CPU time of its whole process tree (its own and that of every process it
waited for, e.g. the dbt subprocess of a run): on a machine shared with other work the wall clock measures the
neighbours too, the CPU time much less so.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import REPO_ROOT, stopwatch

DBT = str(Path(sys.executable).with_name("dbt"))


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any setting the pipeline, Dagster or dbt reads, plus `settings`: a child
    sees only what its case gives it (never a developer's DUCKDB_PATH or CRM_URL)."""
    prefixes = ("DBT_", "DAGSTER_", "DUCKDB_", "LANDING_", "CRM_", "WEBHOOK_", "SLACK_", "SYNC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(settings)
    return env


@dataclass(frozen=True)
class Finished:
    """A child process that exited with 0: its stdout, wall seconds and CPU seconds (user + system, the tree)."""

    stdout: str
    seconds: float
    cpu_seconds: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(argv: list[str], *, env: dict[str, str], what: str, cwd: Path = REPO_ROOT) -> Finished:
    """Run `argv` to its end; raises with the end of its output when it fails. The CPU time is what the children
    this process waited for used meanwhile: the harness runs one child at a time."""
    cpu = _children_cpu()
    with stopwatch() as t:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}")
    return Finished(done.stdout, t.seconds, _children_cpu() - cpu)


def run_python(script: str, *args: str, env: dict[str, str], what: str) -> tuple[dict[str, Any], float]:
    """`python -c script args...` from the repository root: (the JSON object on its last stdout line, wall seconds
    of the whole process). Raises with the end of stderr when the script fails."""
    done = run_timed([sys.executable, "-c", script, *args], env=env, what=what)
    lines = done.stdout.strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), done.seconds


def run_dbt(project: Path, *args: str, env: dict[str, str]) -> Finished:
    """`dbt <args>` in `project` (its own profiles.yml, the working directory there, as dagster-dbt runs it); raises
    with the end of dbt's log when it fails."""
    argv = [DBT, *args, "--project-dir", str(project), "--profiles-dir", str(project)]
    return run_timed(argv, env=env, what=f"dbt {' '.join(args)} in {project}", cwd=project)


def dbt_parse(project: Path, env: dict[str, str]) -> None:
    """`dbt parse` of `project` (its own profiles.yml), untimed setup: a manifest must exist before assets load."""
    run_dbt(project, "parse", "--quiet", env=env)
