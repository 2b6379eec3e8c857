"""Run benchmark cases side by side and write their Markdown report.

A case prepares its input once (a context manager, so servers and temp files go away afterwards) and hands back
named *measures*: callables that run one repetition and return the seconds of the part that counts (each does its
own untimed setup and teardown, e.g. a fresh DuckDB file), or several named timings taken in that one repetition.
The harness runs the measures named for warm-up once, untimed, then every measure once per round, in the order
given (ours, baseline, ours, baseline, ...), so drift in the machine (page cache, CPU boost, a neighbour's load)
hits both sides alike. A *row* of the report compares two timings by the ratio of their medians, or, without a
baseline, holds one timing's median against an absolute limit in seconds (e.g. end-to-end latency).

Adding a case: a module in `bench/cases/` with a `CASE = Case(...)`, listed in `bench/cases/__init__.py`.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

log = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: The full run's report is committed; the quick one (tests, smoke runs) is written elsewhere so it never replaces it.
FULL_REPORT = RESULTS_DIR / "latest.md"
QUICK_REPORT = RESULTS_DIR / "quick.md"
PARTIAL_REPORT = RESULTS_DIR / "partial.md"
DEFAULT_REPEAT = 3
VERSIONS_OF = ("duckdb", "dagster", "boto3", "moto")


@dataclass(frozen=True)
class Row:
    """One line of the report: `ours` against `baseline` (names of measures), ratio of medians against `goal`.

    Without a baseline the row is absolute: `goal` is a limit in seconds on the median of `ours`.
    A row without a goal is informational (shown as `info`), e.g. a naive alternative we do not ship, or one part
    of an absolute timing.
    """

    what: str
    ours: str
    baseline: str | None = None
    goal: float | None = None


#: One repetition: its seconds, or several named timings taken during it (e.g. a total and a part of it).
Measure = Callable[[], float | Mapping[str, float]]


@dataclass
class Setup:
    """What a prepared case hands the harness: measures in the order they run within a round, rows, notes."""

    measures: dict[str, Measure]
    rows: list[Row]
    #: Sizes and facts about the input, written under the table (e.g. "5,000,000 rows, 412 MB").
    notes: list[str] = field(default_factory=list)
    #: Measures run once, untimed, before the first round (lazy imports, connection set-up, cold caches).
    warmup: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    #: (quick, workdir) -> a context manager yielding the Setup; `workdir` is a temp folder removed afterwards.
    prepare: Callable[[bool, Path], AbstractContextManager[Setup]]


@dataclass(frozen=True)
class RowResult:
    case: str
    row: Row
    ours: float
    baseline: float | None

    @property
    def ratio(self) -> float | None:
        """Ours over baseline; None for an absolute row (no baseline)."""
        if self.baseline is None:
            return None
        return self.ours / self.baseline if self.baseline > 0 else float("inf")

    @property
    def verdict(self) -> str:
        if self.row.goal is None:
            return "info"
        measured = self.ours if self.ratio is None else self.ratio
        return "pass" if measured <= self.row.goal else "miss"


@dataclass
class CaseResult:
    case: Case
    samples: dict[str, list[float]]
    rows: list[RowResult]
    notes: list[str]


class Stopwatch:
    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """`with stopwatch() as t: ...` then `t.seconds`: wall time of the block (perf_counter)."""
    watch = Stopwatch()
    started = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - started


def run_case(case: Case, *, quick: bool, repeat: int) -> CaseResult:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{case.id}-") as tmp,
        case.prepare(quick, Path(tmp)) as setup,
    ):
        for name in setup.warmup:
            log.info("%s warm-up: %s", case.id, name)
            setup.measures[name]()
        samples: dict[str, list[float]] = {}
        for round_ in range(1, repeat + 1):
            for name, measure in setup.measures.items():
                taken = measure()
                timings = {name: taken} if isinstance(taken, int | float) else dict(taken)
                for timing, seconds in timings.items():
                    samples.setdefault(timing, []).append(seconds)
                    log.info("%s round %d/%d: %s %s", case.id, round_, repeat, timing, fmt_seconds(seconds))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    rows = [
        RowResult(case.id, row, medians[row.ours], None if row.baseline is None else medians[row.baseline])
        for row in setup.rows
    ]
    return CaseResult(case, samples, rows, setup.notes)


# --- the report ------------------------------------------------------------------------------------------------


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def results_table(results: list[CaseResult]) -> str:
    lines = [
        "| case | what | ours (median) | baseline (median) | ratio | goal | result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        for r in result.rows:
            unit = " s" if r.baseline is None else ""  # an absolute limit is in seconds, a ratio has no unit
            goal = f"≤ {r.row.goal:g}{unit}" if r.row.goal is not None else "—"
            baseline = "—" if r.baseline is None else fmt_seconds(r.baseline)
            ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
            lines.append(
                f"| {r.case} | {r.row.what} | {fmt_seconds(r.ours)} | {baseline} | {ratio} | {goal} | {r.verdict} |"
            )
    return "\n".join(lines)


def samples_section(results: list[CaseResult]) -> str:
    lines = ["| case | measure | runs | min | median | max |", "|---|---|---:|---:|---:|---:|"]
    for result in results:
        for name, values in result.samples.items():
            lines.append(
                f"| {result.case.id} | {name} | {len(values)} | {fmt_seconds(min(values))}"
                f" | {fmt_seconds(statistics.median(values))} | {fmt_seconds(max(values))} |"
            )
    return "\n".join(lines)


def machine_lines() -> list[str]:
    """CPU, cores, memory, Python and library versions: what a ratio needs next to it to be compared later."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    mem = _proc_field("/proc/meminfo", "MemTotal")
    mem_text = f"{int(mem.split()[0]) / 1024 / 1024:.1f} GiB" if mem else "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(f"{name} {_version(name)}" for name in VERSIONS_OF)
    return [
        f"- CPU: {cpu} ({os.cpu_count()} logical cores, {usable} usable by this process)",
        f"- Memory: {mem_text}",
        f"- OS: {platform.platform()}",
        f"- Python: {platform.python_version()} ({platform.python_implementation()})",
        f"- Libraries: {versions}",
        f"- Commit: {_git_describe()}",
    ]


def report(results: list[CaseResult], *, command: str, quick: bool, repeat: int, started: datetime) -> str:
    title = "Benchmarks (quick: tiny sizes, not for comparison)" if quick else "Benchmarks"
    parts = [
        f"# {title}",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        f"- Command: `{command}`",
        f"- Repetitions: {repeat} per measure, interleaved (ours, baseline, ours, baseline, ...), after one untimed"
        " warm-up of the measures a case names; medians below",
        *machine_lines(),
        "",
        "Ratio = ours median / baseline median, both measured in this run on the same input; lower is better."
        " A row without a baseline (—) holds ours' median against an absolute limit in seconds.",
        "",
        results_table(results),
        "",
    ]
    for result in results:
        parts += [f"## {result.case.id}: {result.case.title}", ""]
        parts += [f"- {note}" for note in result.notes] + [""]
    parts += ["## All measures", "", samples_section(results), ""]
    return "\n".join(parts)


def _proc_field(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


# --- the command line ------------------------------------------------------------------------------------------


def command_line(argv: list[str]) -> str:
    python = Path(sys.executable)
    with suppress(ValueError):  # `.venv/bin/python` when run from the repository, as `make bench` does
        python = python.relative_to(Path.cwd())
    return shlex.join([str(python), "-m", "bench", *argv])


def parse_args(argv: list[str]) -> argparse.Namespace:
    from .cases import CASES

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Speed goals as ratios: each case runs ours and its baseline side by side, interleaved.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny sizes and 1 repetition, written to {QUICK_REPORT.relative_to(REPO_ROOT)} (a smoke run)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated case ids to run (default: all: {','.join(CASES)})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"repetitions of each measure (default {DEFAULT_REPEAT}; 1 with --quick)",
    )
    args = parser.parse_args(argv)
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CASES]
    if unknown or not wanted:
        parser.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(CASES)}")
    args.cases = [CASES[c] for c in wanted]
    if args.repeat is None:
        args.repeat = 1 if args.quick else DEFAULT_REPEAT
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    # One line per HTTP request (to moto, to the local CRM) otherwise.
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    started = datetime.now(UTC)
    results = []
    for case in args.cases:
        log.info("%s: %s (%s, %d repetition(s))", case.id, case.title, "quick" if args.quick else "full", args.repeat)
        results.append(run_case(case, quick=args.quick, repeat=args.repeat))
    text = report(results, command=command_line(argv), quick=args.quick, repeat=args.repeat, started=started)
    # Only a full run of every case replaces the committed report; a subset (--cases, --repeat 1, ...) goes beside it.
    from .cases import CASES

    complete = not args.quick and len(args.cases) == len(CASES) and args.repeat >= DEFAULT_REPEAT
    target = QUICK_REPORT if args.quick else FULL_REPORT if complete else PARTIAL_REPORT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    sys.stdout.write(results_table(results) + "\n")
    log.info("written to %s", target.relative_to(REPO_ROOT))
    return 0
