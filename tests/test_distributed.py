"""Sweeps on Dask (studies.distributed): real worker processes, real measurements, no mocks.

The properties: a results file has the same bytes whatever ran the jobs (this process, one worker, two workers, a
worker killed in the middle); a job's own error is raised once, never retried; an unreachable scheduler is one line
of bad input; the auto policy keeps short sweeps in this process.

The worker processes run the jobs of tests/dask_jobs.py by importing that module (tests is a package and the
repository root is on the path that spawned processes inherit). The tests share one cluster (a module fixture):
pytest-xdist runs this file whole on one worker (--dist loadfile in pyproject.toml), so it starts once.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from exact import DivergenceError
from studies import distributed
from studies.common import ResultsFile, StudyParser, add_flags, clean_exit, sweep
from studies.distributed import SchedulerError, check_scheduler, worth_a_cluster
from tests.dask_jobs import JOBS, failing_job, measure_job, pid_job

COLUMNS = ["T", "seed", "metric", "value", "numerical_error", "method"]
KEY = ["T", "seed", "metric"]


def run_sweep(path: Path, jobs=JOBS, work=measure_job, results_class=ResultsFile, **options) -> bytes:
    results = results_class(path, COLUMNS, KEY)
    sweep(jobs, work, results, **options)
    return path.read_bytes()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> bytes:
    return run_sweep(tmp_path_factory.mktemp("none") / "r.csv", scheduler="none")


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of two worker processes, started the way scheduler='local' starts one; the tests reach it
    by its address, as they would a cluster started elsewhere."""
    with distributed._Cluster("local", 2) as running:
        running.client.wait_for_workers(2)
        running.client.run(measure_job, JOBS[0])  # imports and first calls, on both workers, before any timing
        yield running


def warm(running, count: int = 2) -> None:
    """Wait for `count` workers and run a job on each, so that a restarted worker is not still importing torch
    when a test needs it busy."""
    running.client.wait_for_workers(count)
    running.client.run(measure_job, JOBS[0])


def worker_pids(running) -> set[int]:
    return set(running.client.run(os.getpid).values())


# ---------------------------------------------------------------------------- the bytes do not depend on who ran it
def test_in_process_sweep_writes_every_job_in_order(in_process):
    lines = in_process.decode().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    rows = [line.split(",") for line in lines[1:]]
    assert [(int(r[0]), int(r[1])) for r in rows[::4]] == JOBS  # four metrics a job, in job order
    assert len(rows) == 4 * len(JOBS)


@pytest.mark.parametrize("allowed_failures", [
    distributed.ALLOWED_FAILURES,
    pytest.param(0, marks=pytest.mark.slow, id="resubmitted-by-the-client"),
])
def test_a_killed_worker_loses_only_its_job(cluster, in_process, tmp_path, allowed_failures):
    """Two workers; after the first job's rows are written, one worker that is running a job is killed (SIGKILL).
    With our local cluster's setting the scheduler hands the lost job to another worker; with a scheduler that gives
    a job up at the first death (allowed_failures 0, as a cluster elsewhere may be set) this client submits it
    again. The file is complete and the same bytes as the in-process sweep."""
    scheduler = cluster.cluster.scheduler
    scheduler.allowed_failures = allowed_failures
    try:
        warm(cluster)
        before = worker_pids(cluster)
        killed = {}

        class KillAfterFirstJob(ResultsFile):
            def append(self, rows):
                super().append(rows)
                if killed:
                    return
                busy = [w for w, keys in cluster.client.processing().items() if keys]
                assert busy, "no worker was running a job when the first rows arrived"
                pid = cluster.client.run(os.getpid, workers=[busy[0]])[busy[0]]
                killed.update(pid=pid, lines=len(self.path.read_text().splitlines()))
                os.kill(pid, signal.SIGKILL)

        got = run_sweep(tmp_path / "killed.csv", results_class=KillAfterFirstJob,
                        scheduler=cluster.cluster.scheduler_address)
    finally:
        scheduler.allowed_failures = distributed.ALLOWED_FAILURES
    assert 1 < killed["lines"] < 1 + 4 * len(JOBS), "the kill did not happen in the middle of the sweep"
    assert killed["pid"] in before and killed["pid"] not in worker_pids(cluster)
    assert got == in_process


def test_a_job_error_is_raised_once_and_not_retried(cluster, tmp_path):
    log = tmp_path / "attempts.txt"
    log.touch()
    with pytest.raises(DivergenceError, match="job 2 is bad input"):
        run_sweep(tmp_path / "bad.csv", jobs=[(i, str(log)) for i in range(4)], work=failing_job,
                  scheduler=cluster.cluster.scheduler_address)
    assert log.read_text().split().count("2") == 1


def test_one_worker_writes_the_same_bytes(cluster, in_process, tmp_path):
    """The cluster above, down to one worker: every job in one process (with two, jobs finish out of order and
    `sweep` puts their rows back in order). Last of the tests on that cluster."""
    cluster.cluster.scale(1)
    cluster.client.wait_for_workers(1)
    deadline = time.monotonic() + 30
    while len(cluster.client.scheduler_info()["workers"]) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(cluster.client.scheduler_info()["workers"]) == 1
    assert run_sweep(tmp_path / "one.csv", scheduler=cluster.cluster.scheduler_address) == in_process


@pytest.mark.slow
def test_scheduler_local_writes_the_same_bytes_and_leaves_no_process(in_process, tmp_path):
    """scheduler='local' from start to end: its own cluster of two workers, closed when the sweep ends."""
    before = set(dask_processes())
    got = run_sweep(tmp_path / "local.csv", scheduler="local", workers=2)
    assert got == in_process
    deadline = time.monotonic() + 10
    while (left := set(dask_processes()) - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes still running after the sweep: {sorted(left)}"


def dask_processes() -> list[int]:
    """Live child processes of this one, less multiprocessing's resource tracker (it lives as long as we do)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


# ---------------------------------------------------------------------------- bad addresses
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line_of_bad_input(tmp_path, capfd, monkeypatch):
    address = f"tcp://127.0.0.1:{closed_port()}"
    parser = StudyParser(prog="study")
    add_flags(parser, scheduler="none")
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--scheduler", address])
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and address in err
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--scheduler", "lcoal"])
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "'lcoal'" in err
    assert parser.parse_args(["--scheduler", "auto"]).scheduler == "auto"

    # past the parser (a scheduler that went away since): the sweep's own connection fails the same way
    monkeypatch.setattr(distributed, "CONNECT_SECONDS", 1.0)
    path = tmp_path / "r.csv"
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_, clean_exit("study"):
        run_sweep(path, scheduler=address)
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and address in err, err
    assert time.monotonic() - started < 15
    assert path.read_text().splitlines() == [",".join(COLUMNS)]  # no row


def test_scheduler_values():
    assert [check_scheduler(v) for v in ("none", "auto", "local")] == ["none", "auto", "local"]
    for good in ("tcp://10.0.0.1:8786", "node-7.cluster:8786", "tls://[::1]:8786"):
        assert check_scheduler(good, probe=False) == good
    for bad in ("", "lcoal", "tcp://host", "http://host:8786", "host:port"):
        with pytest.raises(SchedulerError, match="unknown scheduler"):
            check_scheduler(bad)


# ---------------------------------------------------------------------------- the auto policy
def test_a_cluster_pays_only_when_the_work_left_exceeds_its_cost():
    S = 10.0
    # two workers: break-even at 2 S of work left (20 s); 10 jobs done in 10.5 s, the first 1.5 s of it
    per_job = (10.5 - 1.5) / 9
    assert not worth_a_cluster(10.5, 1.5, 10, int(19 / per_job), 2, S)
    assert worth_a_cluster(10.5, 1.5, 10, int(21 / per_job) + 1, 2, S)
    # more workers lower the bar towards S itself
    assert worth_a_cluster(10.5, 1.5, 10, int(12 / per_job) + 1, 8, S)
    assert not worth_a_cluster(10.5, 1.5, 10, int(11 / per_job), 8, S)
    # one worker never, one finished job is no estimate, and a slow first job (imports) does not count
    assert not worth_a_cluster(1e6, 1.0, 10, 1000, 1, S)
    assert not worth_a_cluster(100.0, 100.0, 1, 1000, 2, S)
    assert not worth_a_cluster(30.0, 29.0, 2, 10, 2, S)


def test_auto_keeps_a_short_sweep_in_this_process(tmp_path):
    jobs = [(i, 0.01) for i in range(12)]
    started = time.monotonic()
    text = run_sweep(tmp_path / "auto.csv", jobs=jobs, work=pid_job, scheduler="auto", workers=2).decode()
    rows = [line.split(",") for line in text.splitlines()[1:]]
    assert [int(r[0]) for r in rows] == list(range(12))
    assert {int(r[1]) for r in rows} == {os.getpid()}
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_auto_hands_the_rest_to_a_cluster_once_it_pays(tmp_path):
    """With a zero start-up cost the policy starts a cluster after two jobs; this process keeps working until the
    cluster is up, then the workers take the remaining jobs. Every job comes back once."""
    jobs = [(i, 0.1) for i in range(1200)]
    results = ResultsFile(tmp_path / "auto.csv", COLUMNS, KEY)
    finished = distributed.run(jobs, pid_job, scheduler="auto", workers=2, startup=0.0)
    order = []
    for index, rows in finished:
        order.append(index)
        results.append(rows)
    assert sorted(order) == list(range(len(jobs)))
    text = results.path.read_text()
    pids = [int(line.split(",")[1]) for line in text.splitlines()[1:]]
    here = [p for p in pids if p == os.getpid()]
    assert 2 <= len(here) < len(jobs), "the cluster never took over"
    assert len(set(pids) - {os.getpid()}) == 2, "not both workers ran jobs"
