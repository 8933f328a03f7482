"""Several worker processes sharing a listener (``--workers N``).

The parent creates every listening socket before forking (TCP: one per worker, bound to the same
port with SO_REUSEPORT so the kernel spreads connections; Unix: one socket shared by all), then
forks. Each child runs its own event loop and reports its summary to the parent through a pipe.
Children live in their own process group, so a terminal's Ctrl-C reaches only the parent, which
forwards SIGINT/SIGTERM/SIGHUP/SIGUSR1 exactly once; if the parent dies, children get SIGTERM
(Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from netkit.net.runtime import STOP_SIGNALS

_PR_SET_PDEATHSIG = 1
_worker: int | None = None  # this process's index, in a worker


def worker_index() -> int | None:
    """This process's worker index (0 .. N-1) in a child of :func:`run_workers`; None in
    the parent or when there are no workers."""
    return _worker


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def available_memory() -> int | None:
    """Bytes of memory available for new work: ``MemAvailable`` in /proc/meminfo (as free(1)
    shows it), or less under an address-space limit (``ulimit -v``); None where the system
    does not say."""
    found: int | None = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        with contextlib.suppress(OSError, ValueError):
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        found = limit if found is None else min(found, limit)
    return found


def describe_exit(code: int) -> str:
    """How a child ended, from :func:`run_workers`' exit code: ``was killed by SIGKILL``,
    ``exited with code 70``.

    SIGKILL is what the kernel's out-of-memory killer sends, so its description says so.
    """
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:
            return f"was killed by {name} (the kernel's out-of-memory killer sends it: see dmesg)"
        return f"was killed by {name}"
    return f"exited with code {code}"


def fork_worker(
    index: int,
    child_main: Callable[[int], tuple[int, dict[str, Any]]],
    *,
    close: Sequence[int] = (),
) -> tuple[int, int]:
    """Fork one child running ``child_main(index)`` in its own process group, dying with its
    parent; it closes the descriptors in ``close`` first (pipes to its siblings).

    The child ends in ``os._exit`` with the code ``child_main`` returns (70 when it raised, 130
    on KeyboardInterrupt; the error goes to stderr as ``netkit: worker N: ...``) after writing
    its summary, as JSON, to the pipe whose read end is returned.

    Returns:
        The child's pid and the read end of its summary pipe.
    """
    for stream in (sys.stdout, sys.stderr):  # else the child would write the parent's buffers
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid != 0:
        os.close(write_fd)
        return pid, read_fd
    os.close(read_fd)
    for fd in close:
        os.close(fd)
    os.setpgid(0, 0)
    _die_with_parent()
    global _worker
    _worker = index
    code, summary = 70, dict[str, Any]()
    try:
        code, summary = child_main(index)
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:
        print(f"netkit: worker {index}: {str(exc) or type(exc).__name__}", file=sys.stderr)
    finally:
        with contextlib.suppress(OSError):
            os.write(write_fd, json.dumps(summary).encode())
        sys.stdout.flush()
        os._exit(code)


def run_workers(
    count: int,
    child_main: Callable[[int], tuple[int, dict[str, Any]]],
    on_started: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[list[int], list[dict[str, Any]], int | None]:
    """Fork ``count`` children running ``child_main(index)`` and wait for all of them.

    ``child_main`` returns (exit code, summary dict); ``on_started`` runs in the parent once
    every child exists. Must be called before any event loop exists in this process.

    SIGINT and SIGTERM are forwarded to the children; given ``stop`` instead (for a caller
    that is not the main thread, which cannot take signals), setting it sends them SIGINT.

    Returns:
        The children's exit codes (``-N`` for a child killed by signal N), their summaries, and the signal that stopped the parent
        (None when the children ended by themselves).
    """
    children: list[tuple[int, int]] = []
    for index in range(count):
        children.append(fork_worker(index, child_main, close=[fd for _, fd in children]))

    stopped_by: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if not stopped_by:
            stopped_by.append(signum)
        for pid, _ in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    finished = threading.Event()
    if stop is None:
        old = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    else:
        old = {}
        threading.Thread(target=_forward_stop, args=(stop, finished, forward), daemon=True).start()
    if on_started is not None:
        on_started()
    codes: list[int] = []
    summaries: list[dict[str, Any]] = []
    try:
        for pid, fd in children:
            _, status = os.waitpid(pid, 0)
            codes.append(os.waitstatus_to_exitcode(status))
            with os.fdopen(fd, "rb") as pipe:
                data = pipe.read()
            with contextlib.suppress(ValueError):
                summaries.append(json.loads(data or b"{}"))
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        finished.set()
    return codes, summaries, stopped_by[0] if stopped_by else None


def _forward_stop(
    stop: threading.Event, finished: threading.Event, forward: Callable[[int, object], None]
) -> None:
    """Send SIGINT to the children once ``stop`` is set (a thread, until they have ended)."""
    while not finished.is_set():
        if stop.wait(0.2):
            forward(signal.SIGINT, None)
            return


def merge_summaries(
    summaries: Sequence[dict[str, Any]],
    merge: dict[str, Callable[[list[Any]], Any]] | None = None,
) -> dict[str, Any]:
    """The workers' summaries as one: counts added up, the longest uptime, and the fields
    named in ``merge`` merged by their function (given every worker's value); any other
    field as the first worker that has it gave it."""
    merge = merge or {}
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for s in summaries for k in s):
        values = [s[key] for s in summaries if key in s]
        if key in merge:
            merged[key] = merge[key](values)
        elif key == "uptime_s":
            merged[key] = max(values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            merged[key] = sum(values)
        else:
            merged[key] = values[0]
    return merged
