"""``netkit bench --cluster``: one bench on many machines, through a Dask cluster.

netkit invents no coordinator: the scheduler of a Dask cluster (``dask scheduler``, or a
``LocalCluster`` started for ``local:N``) places one task per chosen worker
(:func:`member_task`). Each member checks that it reaches the target, says so on a Dask
``Queue``, and waits at a barrier (a Dask ``Event``) that the client sets once every member
is ready, so that all start at one moment the scheduler agreed, whatever their clocks say.
A member then runs its share of the plan in its own forked worker processes, as a local
bench does, sends progress lines to the client on another ``Queue``, and returns its result
(counts and the encoded HDR histogram). The client merges the members' results exactly;
a member whose worker leaves the cluster mid-run is reported as lost, and the others'
results are kept.

``distributed`` is imported only here, and only when ``--cluster`` is given (the
``netkit[cluster]`` extra).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from netkit.core.addresses import WSURL
from netkit.core.bench.cluster import (
    CLUSTER,
    ClusterSpec,
    ClusterWorker,
    MemberOutcome,
    choose_members,
    member_plans,
)
from netkit.core.bench.http import HTTPLoad
from netkit.core.bench.plan import LoadPlan, Scenario, check_memory
from netkit.core.bench.result import BenchResult, merge_results
from netkit.core.streamtest import Direction
from netkit.errors import (
    ConfigError,
    ConnectError,
    LocalError,
    NetkitError,
    OperationTimeout,
    words,
)
from netkit.net import runtime
from netkit.net.bench.fanout import ProgressFollower, ProgressTotals, run_bench_workers
from netkit.net.bench.worker import Target, make_target, run_worker
from netkit.net.tls import ClientTLS
from netkit.net.workers import available_memory

# How long the client waits for the scheduler, and for every member to reach the barrier
# (a worker starting its task, importing netkit and checking the target) beyond --timeout.
SCHEDULER_TIMEOUT = 10.0
READY_SLACK = 30.0
# How long after the planned end the client waits for a member's result before it calls the
# member lost (the members' own drain is --timeout; this covers the forking and the report).
REPORT_SLACK = 15.0
# How often the client looks at the members, and how often a member sends progress.
_TICK = 0.25
_PROGRESS_EVERY = 1.0


def _distributed() -> Any:
    """The ``distributed`` module, or a usage error saying how to get it."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            (CLUSTER, " needs Dask distributed: pip install 'netkit[cluster]'")
        ) from None
    return distributed


@dataclass(frozen=True)
class MemberJob:
    """What one member runs: everything a worker on another machine needs, picklable.

    Attributes:
        run_id: names this run's queues and events in the scheduler.
        index: the member's number, from 0.
        plan: its share of the run.
        target: the target as given on the command line (each member resolves and dials it
            itself: TLS files named in ``tls`` must exist on the member's machine too).
        processes: local worker processes on the member's machine (bench's ``--workers``).
        ready_timeout: how long it waits at the barrier for the start.
    """

    run_id: str
    index: int
    plan: LoadPlan
    target: str
    tls: ClientTLS
    http: HTTPLoad | None
    processes: int
    ready_timeout: float


def _names(run_id: str) -> dict[str, str]:
    return {
        "ready": f"netkit-bench-{run_id}-ready",
        "progress": f"netkit-bench-{run_id}-progress",
        "go": f"netkit-bench-{run_id}-go",
        "stop": f"netkit-bench-{run_id}-stop",
    }


# --- the member (runs in a Dask worker) -------------------------------------------------------


def preflight(target: Target, plan: LoadPlan) -> None:
    """Reach the target once before any load: one connection (one request for UDP and HTTP,
    whose connecting proves nothing).

    Raises:
        NetkitError: the target cannot be reached, or did not answer well.
    """
    scenario = Scenario.CONNECT
    if target.http is not None or target.name.startswith("udp"):
        scenario = Scenario.ECHO
    probe = replace(
        plan,
        scenario=scenario,
        direction=Direction.FORWARD,  # a stream's direction is not the probe's
        connections=1,
        first_connection=0,
        total_connections=1,
        duration=None,
        requests=1,
        rate=None,
        warmup=0.0,
        pipeline=1,
        stages=None,
    )
    result = runtime.run(lambda: run_worker(probe, target, handle_signals=False), freeze=False)
    if result.requests == 0:
        _, message = next(iter(sorted(result.error_samples.items())), ("", "no answer"))
        raise ConnectError(f"the target did not answer ({message})")


def member_task(job: MemberJob) -> dict[str, Any]:
    """Run one member's share on this Dask worker: check the target, wait at the barrier,
    run, return ``{"result": ...}`` or ``{"error": NetkitError}``."""
    distributed = _distributed()
    names = _names(job.run_id)
    ready = distributed.Queue(names["ready"])
    progress = distributed.Queue(names["progress"])
    try:
        return _member_run(job, distributed, names, ready, progress)
    finally:
        for queue in (ready, progress):  # the scheduler keeps a queue until all close it
            with contextlib.suppress(Exception):
                queue.close()


def _member_run(
    job: MemberJob, distributed: Any, names: dict[str, str], ready: Any, progress: Any
) -> dict[str, Any]:
    go = distributed.Event(names["go"])
    stop = distributed.Event(names["stop"])
    try:
        target = make_target(job.target, job.tls, job.plan.scenario, job.http)
        plans = job.plan.split(job.processes)
        available = available_memory()
        if available is not None:  # this machine's memory, before any of it is taken
            websocket = isinstance(target.endpoint, WSURL)
            check_memory(job.plan, len(plans), available, websocket=websocket)
        preflight(target, job.plan)
    except NetkitError as exc:
        ready.put({"index": job.index, "ok": False})
        return {"error": exc}
    ready.put({"index": job.index, "ok": True})
    if not go.wait(job.ready_timeout):  # False: the time ran out (it does not raise)
        return {"error": OperationTimeout("the run never started (no start from the client)")}
    if stop.is_set():
        return {"error": LocalError("the run was called off before it started")}
    stopping = threading.Event()
    watcher = threading.Thread(target=_watch_stop, args=(stop, stopping), daemon=True)
    watcher.start()
    follower = _ProgressSender(progress, job.index)
    try:
        reports, _ = run_bench_workers(plans, target, follower=follower.follower, stop=stopping)
    finally:
        stopping.set()
    parts = []
    for report in reports:
        if report.error is not None:
            return {"error": report.error}
        assert report.result is not None
        parts.append(report.result)
    return {"result": merge_results(parts).as_dict()}


def _watch_stop(stop: Any, stopping: threading.Event) -> None:
    """Set ``stopping`` when the client sets the run's stop event (or when the run ends)."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError, OSError):
            if stop.wait(0.5):
                stopping.set()
                return


class _ProgressSender:
    """Forwards a member's running totals to the client, about once a second."""

    def __init__(self, queue: Any, index: int) -> None:
        self.queue = queue
        self.index = index
        self.follower = ProgressFollower(self._send)
        self._sent = 0.0

    def _send(self, totals: ProgressTotals) -> None:
        now = time.monotonic()
        if now - self._sent < _PROGRESS_EVERY:
            return
        self._sent = now
        with contextlib.suppress(Exception):  # progress is best effort, never the run's end
            self.queue.put(
                {
                    "index": self.index,
                    "elapsed": totals.elapsed,
                    "requests": totals.requests,
                    "rate": totals.rate,
                    "errors": totals.errors,
                    "p99_ns": totals.p99_ns,
                    "warmup": totals.warmup,
                },
                timeout=1,
            )


# --- the client -------------------------------------------------------------------------------


@contextlib.contextmanager
def connect_cluster(spec: ClusterSpec, timeout: float = SCHEDULER_TIMEOUT) -> Iterator[Any]:
    """A Dask client of the cluster ``spec`` names (given ``timeout`` seconds to reach its
    scheduler); for ``local:N``, a LocalCluster of N single-threaded worker processes on
    127.0.0.1, closed with the client.

    Raises:
        ConfigError: distributed is not installed.
        ConnectError: the scheduler cannot be reached.
    """
    distributed = _distributed()
    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if spec.local:
        cluster = distributed.LocalCluster(
            n_workers=spec.local_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            # Dask serves its dashboard even when told None (on 8787, or any port when
            # that is taken): keep it on loopback, on a port of the kernel's choosing.
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,
        )
        with cluster, distributed.Client(cluster) as client:
            client.wait_for_workers(spec.local_workers, timeout=READY_SLACK)
            yield client
        return
    try:
        client = distributed.Client(spec.scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ConnectError(f"cannot reach the Dask scheduler at {spec.scheduler}: {exc}") from None
    with client:
        yield client


def cluster_workers(client: Any) -> list[ClusterWorker]:
    """The cluster's workers now, from the scheduler."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return [ClusterWorker.from_info(addr, w) for addr, w in info.items()]


def _live_addresses(client: Any) -> set[str]:
    """The workers the scheduler has now (asked each time: the client's own copy of the
    scheduler's information is refreshed only every few seconds)."""
    return set(client.nthreads())


@dataclass
class FleetRun:
    """One cluster run, from the client: choose members, start them together, follow them,
    collect what each ended with.

    Attributes:
        spec: the cluster.
        plan: the whole run.
        target, tls, http: the target as given, and its settings.
        processes: local worker processes per member (bench's ``--workers``).
        hosts: how many members (None: every distinct host, or every worker).
        per_worker: one member per worker instead of per host.
        on_members: told the chosen members before the run starts.
        on_progress: told each member's latest progress, about once a second.
    """

    spec: ClusterSpec
    plan: LoadPlan
    target: str
    tls: ClientTLS
    http: HTTPLoad | None
    processes: int
    hosts: int | None = None
    per_worker: bool = False
    on_members: Callable[[list[ClusterWorker]], None] | None = None
    on_progress: Callable[[dict[int, dict[str, Any]]], None] | None = None

    def run(self) -> tuple[list[MemberOutcome], bool]:
        """Run; returns each member's outcome and whether SIGINT cut the run short.

        Raises:
            NetkitError: before any load: the cluster cannot be used, or a member cannot
                reach the target (the error names the member).
        """
        with connect_cluster(self.spec, max(self.plan.timeout, 1.0)) as client:
            # local:N workers share one host: each is a member.
            per_worker = self.per_worker or self.spec.local
            members = choose_members(cluster_workers(client), self.hosts, per_worker)
            plans = member_plans(self.plan, len(members))
            if self.on_members is not None:
                self.on_members(members)
            return self._run(client, members, plans)

    def _run(
        self, client: Any, members: list[ClusterWorker], plans: list[LoadPlan]
    ) -> tuple[list[MemberOutcome], bool]:
        distributed = _distributed()
        run_id = uuid.uuid4().hex[:12]
        names = _names(run_id)
        ready_q = distributed.Queue(names["ready"], client=client)
        progress_q = distributed.Queue(names["progress"], client=client)
        go = distributed.Event(names["go"], client=client)
        stop = distributed.Event(names["stop"], client=client)
        ready_timeout = self.plan.timeout + READY_SLACK
        futures = [
            client.submit(
                member_task,
                MemberJob(
                    run_id, i, plan, self.target, self.tls, self.http, self.processes, ready_timeout
                ),
                workers=[m.address],
                allow_other_workers=False,
                pure=False,
                retries=0,
                key=f"netkit-bench-{run_id}-{i}",
            )
            for i, (m, plan) in enumerate(zip(members, plans, strict=True))
        ]
        outcomes = [MemberOutcome(i, m) for i, m in enumerate(members)]
        keep_stop = False
        try:
            try:
                self._barrier(client, ready_q, futures, outcomes, ready_timeout)
            except BaseException as exc:
                # Called off: a member that sees the start must see the stop too, so the stop
                # is cleared (below) only once every member has returned. One still checking
                # the target after --timeout (or any, on Ctrl-C) leaves it set on the
                # scheduler: a few bytes there, never a load nobody asked for.
                stop.set()
                go.set()
                settle = 0.0 if isinstance(exc, KeyboardInterrupt) else self.plan.timeout + _TICK
                keep_stop = not _settled(futures, settle)
                client.cancel(futures)
                raise
            go.set()
            return outcomes, self._follow(client, progress_q, stop, futures, outcomes)
        finally:
            # The scheduler keeps a queue until every client closes it, and an event until it
            # is cleared: a long-lived scheduler keeps nothing of a finished run.
            with contextlib.suppress(Exception):
                for queue in (ready_q, progress_q):
                    queue.close()
                go.clear()
                if not keep_stop:
                    stop.clear()

    def _barrier(
        self,
        client: Any,
        ready_q: Any,
        futures: list[Any],
        outcomes: list[MemberOutcome],
        timeout: float,
    ) -> None:
        """Wait until every member has reached the target and waits for the start.

        Raises:
            NetkitError: a member cannot reach the target (its error, naming it), a member's
                worker left, or not all were ready in time.
        """
        deadline = time.monotonic() + timeout
        ready: set[int] = set()
        failed: list[NetkitError] = []
        while len(ready) + len(failed) < len(futures):
            _pause(futures)
            for item in ready_q.get(batch=True):
                if item["ok"]:
                    ready.add(item["index"])
                else:
                    failed.append(_member_error(outcomes[item["index"]], futures[item["index"]]))
            for i, future in enumerate(futures):
                if i not in ready and future.status == "error":
                    raise _named(outcomes[i], LocalError(f"failed: {future.exception()}"))
            gone = {o.worker.address for o in outcomes} - _live_addresses(client)
            if gone:
                who = next(o for o in outcomes if o.worker.address in gone)
                raise _named(who, LocalError("left the cluster before the run started"))
            if time.monotonic() > deadline:
                late = [o for o in outcomes if o.index not in ready]
                raise _named(late[0], OperationTimeout(f"not ready within {timeout:g} s"))
        if failed:
            raise _joined(failed)

    def _follow(
        self,
        client: Any,
        progress_q: Any,
        stop: Any,
        futures: list[Any],
        outcomes: list[MemberOutcome],
    ) -> bool:
        """Wait for every member's result (or its loss), passing progress on; returns
        whether SIGINT cut the run short."""
        plan = self.plan
        end: float | None = None
        if plan.duration is not None:
            end = time.monotonic() + plan.warmup + plan.duration + plan.timeout + REPORT_SLACK
        latest: dict[int, dict[str, Any]] = {}
        pending = set(range(len(futures)))
        interrupted = False
        while pending:
            try:
                self._tick(client, progress_q, futures, outcomes, latest, pending, end)
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                stop.set()
                end = time.monotonic() + plan.timeout + REPORT_SLACK
        return interrupted

    def _tick(
        self,
        client: Any,
        progress_q: Any,
        futures: list[Any],
        outcomes: list[MemberOutcome],
        latest: dict[int, dict[str, Any]],
        pending: set[int],
        end: float | None,
    ) -> None:
        _pause([futures[i] for i in pending])
        fresh = progress_q.get(batch=True)
        for item in fresh:
            latest[item["index"]] = item
        if fresh and self.on_progress is not None:
            self.on_progress(dict(latest))
        for i in list(pending):
            if futures[i].done():
                pending.discard(i)
                _collect(outcomes[i], futures[i])
        if not pending:
            return
        live = _live_addresses(client)
        late = end is not None and time.monotonic() > end
        for i in list(pending):
            outcome = outcomes[i]
            if outcome.worker.address not in live or late:
                pending.discard(i)
                outcome.lost = True
                outcome.error = (
                    "was lost mid-run (its worker left the cluster)"
                    if outcome.worker.address not in live
                    else "sent no result in time"
                )
                futures[i].cancel()


def _pause(futures: list[Any]) -> None:
    """Wait a tick, or less when one of ``futures`` finishes first."""
    with contextlib.suppress(TimeoutError):
        _distributed().wait(futures, timeout=_TICK, return_when="FIRST_COMPLETED")


def _settled(futures: list[Any], timeout: float) -> bool:
    """Whether every one of ``futures`` finished within ``timeout`` seconds."""
    if timeout > 0:
        with contextlib.suppress(TimeoutError):
            _distributed().wait(futures, timeout=timeout)
    return all(f.done() for f in futures)


def _collect(outcome: MemberOutcome, future: Any) -> None:
    """Fill ``outcome`` from its finished task."""
    try:
        answer = future.result()
    except Exception as exc:  # the task itself failed: Dask gives its exception back
        outcome.error = f"failed: {exc}"
        return
    if "error" in answer:
        outcome.error = str(answer["error"])
    else:
        outcome.result = BenchResult.from_dict(answer["result"])


def _member_error(outcome: MemberOutcome, future: Any) -> NetkitError:
    """The error of a member that could not reach the target, naming the member."""
    try:
        answer = future.result(timeout=SCHEDULER_TIMEOUT)
    except Exception as exc:
        return _named(outcome, LocalError(f"failed: {exc}"))
    error = answer.get("error")
    if not isinstance(error, NetkitError):
        error = LocalError(f"failed: {error}")
    return _named(outcome, error)


def _joined(errors: list[NetkitError]) -> NetkitError:
    """One error for members that could not start: the first's kind, every message."""
    if len(errors) == 1:
        return errors[0]
    joined = copy.copy(errors[0])
    joined.args = ("; ".join(str(e) for e in errors),)
    joined.words = None
    return joined


def _named(outcome: MemberOutcome, error: NetkitError) -> NetkitError:
    """``error``, its message starting with the member it happened on."""
    who = f"cluster member {outcome.index + 1} ({outcome.worker.address}): "
    named = copy.copy(error)
    named.args = (who + str(error),)
    if error.words is not None:
        named.words = words(who, error.words)
    return named
