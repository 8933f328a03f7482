"""A real Dask cluster for tests: a ``dask scheduler`` on 127.0.0.1 (a port the kernel
chose) and ``dask worker`` processes, each listening on a loopback address of its own so that
the scheduler sees them as distinct hosts."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import distributed

SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


@dataclass
class DaskCluster:
    """A scheduler and its workers, each a process of its own."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]]

    def start_worker(self, host: str, *, wrap: list[str] | None = None) -> subprocess.Popen[bytes]:
        """Start one more worker listening on ``host`` and wait until the scheduler has it."""
        command = [
            *WORKER,
            self.address,
            "--nthreads",
            "1",
            "--no-nanny",
            "--dashboard-address",
            f"{host}:0",
            "--host",
            host,
            "--name",
            f"w-{host}",
        ]
        if wrap is not None:  # the last word of ``wrap`` is a shell command to end with it
            command = [*wrap[:-1], f"{wrap[-1]} {shlex.join(command)}"]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.workers[host] = proc
        with distributed.Client(self.address, timeout=30) as client:
            client.wait_for_workers(len(self.workers), timeout=60)
        return proc

    def stop_worker(self, host: str) -> None:
        """Stop the worker on ``host`` and wait until the scheduler has let it go."""
        self.workers[host].kill()
        self.forget(host)

    def forget(self, host: str) -> None:
        """Wait for the (killed) worker on ``host`` to end and to leave the scheduler."""
        self.workers.pop(host).wait(timeout=10)
        with distributed.Client(self.address, timeout=30) as client:
            deadline = time.monotonic() + 30
            while len(client.nthreads()) > len(self.workers):
                assert time.monotonic() < deadline, "the scheduler kept a dead worker"
                time.sleep(0.05)  # polling the scheduler for the worker's removal

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def start_scheduler(
    host: str, info: Path, wrap: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """A ``dask scheduler`` on ``host`` (a port the kernel chose; ``wrap``: a command to run it
    under, as ``ip netns exec NS``); returns it and its address, once it listens."""
    scheduler = subprocess.Popen(
        [
            *wrap,
            *SCHEDULER,
            "--host",
            host,
            "--port",
            "0",
            "--dashboard-address",  # --no-dashboard still serves HTTP on 0.0.0.0:8787
            f"{host}:0",
            "--scheduler-file",
            str(info),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (info.exists() and info.stat().st_size):
            assert scheduler.poll() is None, "dask scheduler exited"
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.05)  # polling for the file the scheduler writes when it listens
    except BaseException:
        scheduler.kill()
        scheduler.wait()
        raise
    return scheduler, str(json.loads(info.read_text())["address"])


@contextlib.contextmanager
def dask_cluster(tmp: Path, hosts: list[str]) -> Iterator[DaskCluster]:
    """A scheduler on 127.0.0.1 (a port the kernel chose) and one worker per host."""
    scheduler, address = start_scheduler("127.0.0.1", tmp / "scheduler.json")
    cluster = DaskCluster(address, scheduler, {})
    try:
        for host in hosts:
            cluster.start_worker(host)
        yield cluster
    finally:
        cluster.stop()
