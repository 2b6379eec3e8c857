"""Child processes the cases time or prepare with: a Python script in a fresh interpreter, `dbt parse`.

A fresh process per repetition keeps import caches and module state of one repetition out of the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def run_python(script: str, *args: str, env: dict[str, str], what: str) -> tuple[dict[str, Any], float]:
    """`python -c script args...` from the repository root: (the JSON object on its last stdout line, wall seconds
    of the whole process). Raises with the end of stderr when the script fails."""
    with stopwatch() as t:
        done = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-4000:]}")
    lines = done.stdout.strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), t.seconds


def run_dbt(project: Path, *args: str, env: dict[str, str]) -> None:
    """`dbt <args>` in `project` (its own profiles.yml, the working directory there, as dagster-dbt runs it); raises
    with the end of dbt's log when it fails."""
    done = subprocess.run(
        [DBT, *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} in {project} failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")


def dbt_parse(project: Path, env: dict[str, str]) -> None:
    """`dbt parse` of `project` (its own profiles.yml), untimed setup: a manifest must exist before assets load."""
    run_dbt(project, "parse", "--quiet", env=env)
