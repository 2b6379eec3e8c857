"""The local run launcher's worker check: a process that exists, one that is gone, one whose pid was reused."""

import os
import subprocess
import sys
import time

import pytest

from pipeline.run_launcher import LocalRunLauncher, process_started_at, worker_alive


def test_a_running_worker_is_alive_and_a_killed_one_is_not():
    started_at = time.time() + 1  # its RUN_START event comes after the process started
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert worker_alive(worker.pid, started_at)
    finally:
        worker.kill()
        worker.wait()
    assert not worker_alive(worker.pid, started_at)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process start times come from /proc")
def test_a_process_that_started_after_the_run_is_not_its_worker():
    """After a reboot or a long time the run's pid may belong to another process, started after the run."""
    started = process_started_at(os.getpid())
    assert started is not None and started <= time.time()
    assert worker_alive(os.getpid(), run_started_at=started + 1)
    assert not worker_alive(os.getpid(), run_started_at=started - 60)


def test_the_launcher_offers_run_monitoring_a_health_check():
    assert LocalRunLauncher().supports_check_run_worker_health
