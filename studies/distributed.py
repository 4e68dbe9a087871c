"""Sweeps on Dask: the jobs of `studies.common.sweep` run on worker processes, here or on a cluster.

    run(jobs, work, scheduler="local", workers=2)        # yields (index, outcome) as jobs finish

`scheduler` says where the jobs run:

- "local": a `dask.distributed.LocalCluster` of worker processes on this machine (one per core unless `workers`
  says otherwise, one thread each), started quietly and closed at the end, also on an error or Ctrl-C.
- an address ("tcp://host:8786", "host:8786"): a running Dask scheduler (e.g. one that dask-jobqueue started on
  Slurm); its workers must be able to import the project and the module of `work`. A scheduler that does not
  answer within CONNECT_SECONDS is bad input (`SchedulerError`).
- "auto": the jobs run in this process, in order, until the measured cost of the work left shows that a local
  cluster would finish it sooner even counting its start-up (`worth_a_cluster`); the cluster then starts in the
  background while this process keeps measuring, and takes the remaining jobs once it is up. A sweep whose jobs so
  far say that less work is left than a cluster's start-up never starts one; a cluster that fails to start leaves
  the sweep in this process.
- "none": this process, in order (what `sweep` does itself).

Only the calling process sees the outcomes (and `sweep` writes them, in job order). A worker that dies loses only
the job it was running: the scheduler hands the job to another worker, up to ALLOWED_FAILURES deaths per job on a
local cluster, and this client submits a job lost that way again, up to RESUBMITS times. An exception raised by a job
(the project's bad-input errors included) is never retried: it stops the sweep, as it would in-process.

Each job runs with the torch intra-op thread count of the calling process (1 in every study by default), so a job
computes the same numbers wherever it runs and the results file has the same bytes whatever the scheduler.

This module imports nothing from the rest of `studies` (`studies.common` imports it), and Dask only when a cluster
is used.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import logging
import os
import re
import socket
import sys
import time
from typing import Callable, Iterator, Sequence

import torch

# Seconds a local cluster of one worker per core costs around its useful work on an idle 2-core machine:
# LocalCluster start, the first job on each worker (imports of torch and the engines, first-call set-up), the close,
# and the import of dask.distributed here. `python -m benchmarks.sweeps` measured about 10 s of CPU per worker
# (three runs, 9.9-10.7 s) and a 2.9 s import on a 2-core machine at load average 7, where the wall time was
# 53-79 s: on a busy machine `startup_seconds` scales this by the load per core.
STARTUP_SECONDS = 12.0
CONNECT_SECONDS = 5.0  # how long a Client waits for a scheduler at an address
ALLOWED_FAILURES = 3  # worker deaths one job may cause on our local cluster before Dask gives it up (KilledWorker)
RESUBMITS = 2  # times this client submits again a job that Dask gave up on after worker deaths

NAMES = ("none", "auto", "local")
_ADDRESS = re.compile(r"(?:(?P<protocol>tcp|tls)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")


class SchedulerError(ValueError):
    """A --scheduler value that names no scheduler or one that does not answer (bad input: one line, exit 2)."""


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------- the --scheduler value
def check_scheduler(text: str, probe: bool = True) -> str:
    """`text` if it is none, auto, local or the address of a scheduler that accepts a connection, else a
    SchedulerError naming it. The probe is a plain TCP connection (no Dask import), so a study refuses an
    unreachable address before it writes anything."""
    if text in NAMES:
        return text
    match = _ADDRESS.fullmatch(text)
    if match is None:
        raise SchedulerError(f"unknown scheduler {text!r}: use none, auto, local or the address of a running Dask "
                             "scheduler such as tcp://host:8786")
    if probe:
        host, port = match["host"].strip("[]"), int(match["port"])
        try:
            socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
        except OSError as err:
            raise SchedulerError(f"no Dask scheduler reachable at {text!r} ({err.strerror or err})") from None
    return text


def scheduler_value(text: str) -> str:
    """argparse type of --scheduler (see check_scheduler)."""
    try:
        return check_scheduler(text)
    except SchedulerError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


scheduler_value.__name__ = "scheduler"


# ---------------------------------------------------------------------------- the auto policy
def startup_seconds() -> float:
    """STARTUP_SECONDS on an idle machine; more on a busy one, where the workers' imports share the cores with
    whatever else runs (the load average per core, never less than 1: the jobs timed in this process are slowed
    by the same load, so the two stay comparable)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        load = 0.0
    return STARTUP_SECONDS * max(1.0, load / cores())


def worth_a_cluster(elapsed: float, first: float, done: int, remaining: int, workers: int,
                    startup: float) -> bool:
    """Whether a local cluster of `workers` processes should take over the `remaining` jobs of a sweep.

    After `done` jobs in `elapsed` seconds (the first of them took `first`), the rest would take about
    r = remaining * (elapsed - first) / (done - 1) seconds here; the first job is left out of the mean because it
    carries one-time costs (lazy imports, caches). A cluster does it in about startup + r / workers, so it pays when
        r > startup * workers / (workers - 1).
    That is the break-even of a cluster whose start-up stops all work; `run` keeps measuring in this process while
    the cluster starts, so the rule is on the safe side."""
    if workers < 2 or remaining < workers or done < 2:
        return False
    left = remaining * max(elapsed - first, 0.0) / (done - 1)
    return left > startup * workers / (workers - 1)


# ---------------------------------------------------------------------------- running jobs
def run(jobs: Sequence, work: Callable, *, scheduler: str = "local", workers: int | None = None,
        startup: float | None = None) -> Iterator[tuple[int, object]]:
    """Yield (index, work(jobs[index])) for every job, in the order the jobs finish.

    `scheduler` is "none", "local", "auto" or an address (module docstring); `workers` sizes the local cluster
    (default: one per core) and means nothing for an address. `startup` is the auto policy's cluster cost in seconds
    (default: startup_seconds(), read at each decision)."""
    jobs = list(jobs)
    threads = torch.get_num_threads()
    if scheduler == "none":
        yield from ((index, work(job)) for index, job in enumerate(jobs))
        return
    if scheduler == "auto":
        yield from _auto(jobs, work, workers or cores(), threads, startup)
        return
    if scheduler != "local":
        check_scheduler(scheduler, probe=False)
    with _Cluster(scheduler, workers or cores()) as cluster:
        yield from cluster.run(jobs, work, range(len(jobs)), threads)


def _auto(jobs: list, work: Callable, workers: int, threads: int,
          startup: float | None) -> Iterator[tuple[int, object]]:
    """In this process until `worth_a_cluster` says otherwise, then on a local cluster started in the background."""
    pending = collections.deque(range(len(jobs)))
    starter = None  # a background thread's future of a started _Cluster
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="start-cluster")
    try:
        began = time.perf_counter()
        first = 0.0
        done = 0
        while pending and not (starter is not None and starter.done()):
            index = pending.popleft()
            yield index, work(jobs[index])
            done += 1
            if done == 1:
                first = time.perf_counter() - began
            if starter is None and worth_a_cluster(time.perf_counter() - began, first, done, len(pending),
                                                   min(workers, cores()),  # no faster than the cores allow
                                                   startup_seconds() if startup is None else startup):
                starter = pool.submit(_Cluster("local", workers).start)
        if pending:
            try:
                cluster = starter.result()
            except Exception as err:  # a default must not fail where the in-process loop would not
                print(f"scheduler auto: no local cluster ({type(err).__name__}: {err}); the sweep goes on in this "
                      "process", file=sys.stderr)
                for index in pending:
                    yield index, work(jobs[index])
            else:
                yield from cluster.run(jobs, work, pending, threads)
    finally:
        if starter is not None:
            # a cluster that is still starting cannot be stopped half-way: wait for it, then close it (a cluster
            # that failed to start has closed itself)
            try:
                cluster = starter.result()
            except BaseException:
                cluster = None
            if cluster is not None:
                cluster.close()
        pool.shutdown(wait=False)


def _call(work: Callable, job, threads: int):
    """One job on a worker, with the caller's torch thread count."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return work(job)


class _Cluster:
    """A Dask client on a local cluster it owns (closed on exit) or on a scheduler at an address."""

    def __init__(self, scheduler: str, workers: int):
        self.scheduler = scheduler
        self.workers = workers
        self.cluster = None
        self.client = None
        self._closed = False
        self._log_level = None

    def __enter__(self) -> _Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> _Cluster:
        from dask.distributed import Client, LocalCluster

        logger = logging.getLogger("distributed")
        self._log_level = logger.level
        try:
            if self.scheduler == "local":
                self.cluster = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    # no dashboard; the scheduler's HTTP routes on any free port (not 8787, maybe taken)
                    dashboard_address=":0", scheduler_kwargs={"dashboard": False, "allowed_failures": ALLOWED_FAILURES},
                    silence_logs=logging.ERROR,
                )
                self.client = Client(self.cluster)
            else:
                try:
                    self.client = Client(self.scheduler, timeout=CONNECT_SECONDS)
                except (OSError, ValueError) as err:
                    raise SchedulerError(f"no Dask scheduler answered at {self.scheduler!r} within "
                                         f"{CONNECT_SECONDS:g} s ({type(err).__name__})") from None
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close the client, and the cluster if it is ours; once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.client is not None:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
            if self._log_level is not None:
                logging.getLogger("distributed").setLevel(self._log_level)

    def run(self, jobs: list, work: Callable, indices, threads: int) -> Iterator[tuple[int, object]]:
        """Submit the jobs at `indices` (earliest first) and yield (index, outcome) as they finish; a job lost to
        worker deaths is submitted again, any other failure is raised here."""
        from dask.distributed import as_completed
        from distributed.scheduler import KilledWorker

        def submit(index: int):
            return self.client.submit(_call, work, jobs[index], threads, pure=False)

        index_of = {}
        for index in indices:
            index_of[submit(index)] = index
        lost = dict.fromkeys(index_of.values(), 0)
        finished = as_completed(list(index_of))
        try:
            for future in finished:
                index = index_of.pop(future)
                if future.status == "error" and isinstance(future.exception(), KilledWorker) \
                        and lost[index] < RESUBMITS:
                    lost[index] += 1
                    again = submit(index)
                    index_of[again] = index
                    finished.add(again)
                    continue
                outcome = future.result()  # raises the job's own exception, with its traceback
                future.release()
                yield index, outcome
        finally:
            for future in index_of:
                future.cancel()
