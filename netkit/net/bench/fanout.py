"""Running a ``netkit bench`` plan in forked worker processes, and collecting what they report.

:func:`run_bench_workers` forks one process per part of the plan (through
:func:`netkit.net.workers.run_workers`). Each runs :func:`~netkit.net.bench.worker.run_worker`
on its own event loop and writes what it ended with to a file of its own: its
:class:`~netkit.core.bench.result.BenchResult`, or the :class:`~netkit.errors.NetkitError` that
stopped it, pickled (errors are data: the parent gets the error object back, not its name).
When a live view is wanted, workers also write small JSON progress lines to a shared
non-blocking pipe; a thread in the parent (:class:`ProgressFollower`) reads them and hands
running totals to a callback.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import select
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from netkit.core.bench.plan import LoadPlan
from netkit.core.bench.result import BenchResult
from netkit.errors import LocalError, NetkitError
from netkit.net import runtime
from netkit.net.bench.worker import Target, run_worker
from netkit.net.sockets import raise_nofile_limit
from netkit.net.workers import describe_exit, run_workers

# How often the follower looks at the pipe, and how far apart rate samples are.
_TICK = 0.25
_RATE_WINDOW = 0.5


@dataclass(frozen=True)
class WorkerReport:
    """What one worker process ended with.

    Attributes:
        index: the worker's number, from 0.
        exit_code: how the process ended (``-N``: killed by signal N).
        result: its result, or None when it has none.
        error: why it has none: the error the worker raised, or a LocalError saying how the
            process ended before writing anything.
    """

    index: int
    exit_code: int
    result: BenchResult | None
    error: NetkitError | None


@dataclass(frozen=True)
class ProgressTotals:
    """The workers' running totals, as of the latest progress line of each."""

    elapsed: float  # seconds since the workers started
    requests: int
    rate: float  # requests/s over the last half second or so
    errors: int
    p99_ns: float
    warmup: bool  # some worker is still warming up
    statuses: dict[str, int] = field(default_factory=dict)  # HTTP answers by class ("2xx")


class Follower(Protocol):
    """Something that follows the workers' progress lines while they run."""

    def start(self, fd: int) -> None:
        """The workers run: follow the lines on ``fd``."""

    def stop(self) -> None:
        """The workers are done."""


class ProgressFollower:
    """Reads the workers' progress lines from a pipe in a thread; calls ``on_totals`` with
    the running totals about four times a second (once some worker has reported)."""

    def __init__(self, on_totals: Callable[[ProgressTotals], None]) -> None:
        self.on_totals = on_totals
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, fd: int) -> None:
        """Start following the progress lines on ``fd``."""
        self._thread = threading.Thread(target=self._follow, args=(fd,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following (waits a little for the thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def _follow(self, fd: int) -> None:
        started = time.monotonic()
        latest: dict[int, dict[str, Any]] = {}
        pending = b""
        last_total, last_time, rate = 0, started, 0.0
        while not self._stop.is_set():
            if select.select([fd], [], [], _TICK)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        snap = json.loads(line)
                        latest[int(snap["w"])] = snap
            if not latest:
                continue
            now = time.monotonic()
            total = sum(s["requests"] for s in latest.values())
            if now - last_time >= _RATE_WINDOW:
                rate = max(0.0, (total - last_total) / (now - last_time))
                last_total, last_time = total, now
            self.on_totals(
                ProgressTotals(
                    elapsed=now - started,
                    requests=total,
                    rate=rate,
                    errors=sum(s["errors"] for s in latest.values()),
                    p99_ns=max(s["p99_ns"] for s in latest.values()),
                    warmup=any(s["phase"] == "warmup" for s in latest.values()),
                    statuses=_sum_classes(s.get("statuses", {}) for s in latest.values()),
                )
            )


def _sum_classes(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Status-class counts added over the workers, in class order."""
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part)
    return dict(sorted(total.items()))


def run_bench_workers(
    plans: list[LoadPlan],
    target: Target,
    *,
    follower: Follower | None = None,
    stop: threading.Event | None = None,
) -> tuple[list[WorkerReport], int | None]:
    """Run each plan in a worker process of its own and wait for all of them.

    Must be called before any event loop exists in this process.

    Args:
        follower: given, workers send progress lines and it follows them while they run
            (a :class:`ProgressFollower`, or a view built around one).
        stop: for a caller off the main thread (a cluster member): setting it stops the
            workers early, as SIGINT would (see :func:`~netkit.net.workers.run_workers`).

    Returns:
        One report per worker, in order, and the signal that stopped the run early, if any.
    """
    raise_nofile_limit()
    results_dir = Path(tempfile.mkdtemp(prefix="netkit-bench-"))
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETFL, fcntl.fcntl(write_fd, fcntl.F_GETFL) | os.O_NONBLOCK)

    def child(index: int) -> tuple[int, dict[str, Any]]:
        os.close(read_fd)

        def progress(snapshot: dict[str, Any]) -> None:
            line = json.dumps({"w": index, **snapshot}) + "\n"
            with contextlib.suppress(OSError):  # a full pipe drops an update, never blocks
                os.write(write_fd, line.encode())

        report = progress if follower is not None else None
        outcome: BenchResult | NetkitError
        try:
            outcome = runtime.run(lambda: run_worker(plans[index], target, progress=report))
        except NetkitError as exc:
            outcome = exc
        record = outcome if isinstance(outcome, NetkitError) else outcome.as_dict()
        (results_dir / f"worker-{index}").write_bytes(pickle.dumps(record))
        return 0, {}

    def started() -> None:
        os.close(write_fd)
        if follower is not None:
            follower.start(read_fd)

    try:
        codes, _, signum = run_workers(len(plans), child, on_started=started, stop=stop)
    finally:
        if follower is not None:
            follower.stop()
        with contextlib.suppress(OSError):
            os.close(read_fd)
    try:
        reports = [_read_report(results_dir, i, len(plans), code) for i, code in enumerate(codes)]
    finally:
        shutil.rmtree(results_dir, ignore_errors=True)
    return reports, signum


def _read_report(results_dir: Path, index: int, count: int, code: int) -> WorkerReport:
    """What worker ``index`` wrote; ``code`` is how it ended (for when it wrote nothing)."""
    try:
        # Written by our own forked child into a private temporary directory.
        record = pickle.loads((results_dir / f"worker-{index}").read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        error = LocalError(
            f"bench worker {index + 1} of {count} {describe_exit(code)} before writing its result"
        )
        return WorkerReport(index, code, None, error)
    if isinstance(record, NetkitError):
        return WorkerReport(index, code, None, record)
    return WorkerReport(index, code, BenchResult.from_dict(record), None)
