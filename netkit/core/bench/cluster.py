"""``netkit bench --cluster``: the arithmetic of a run on many machines, with no I/O.

Which cluster the flag names (:func:`parse_cluster`), which of the cluster's workers run the
load (:func:`choose_members`: one per distinct host unless every worker is wanted), each
member's share of the plan (:func:`member_plans`: connections, requests and the open-loop
rate split exactly, as between local worker processes), and what each member ended with
(:class:`MemberOutcome`) and how the fleet's result is made of them (:func:`fleet_result`).
The Dask side is :mod:`netkit.net.bench.cluster`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from netkit.core.bench.plan import CONNECTIONS, LoadPlan
from netkit.core.bench.result import BenchResult, merge_results
from netkit.errors import ConfigError, Setting

CLUSTER, HOSTS, REQUESTS = Setting("cluster"), Setting("hosts"), Setting("requests")

# The Dask scheduler's default port, as `dask scheduler` listens on it.
DEFAULT_SCHEDULER_PORT = 8786
# local:N starts N worker processes on this machine: more than this is a typo.
MAX_LOCAL_WORKERS = 64


@dataclass(frozen=True)
class ClusterSpec:
    """The cluster ``--cluster`` names.

    Attributes:
        scheduler: the scheduler's address (``tcp://HOST:PORT``), or None for a local cluster.
        local_workers: for ``local:N``, the N worker processes to start on this machine.
    """

    scheduler: str | None = None
    local_workers: int = 0

    @property
    def local(self) -> bool:
        """A cluster started on this machine for the run (``local:N``)."""
        return self.scheduler is None

    def __str__(self) -> str:
        return f"local:{self.local_workers}" if self.local else str(self.scheduler)


def parse_cluster(text: str) -> ClusterSpec:
    """Parse ``tcp://HOST:PORT``, ``HOST:PORT``, ``HOST`` (port 8786) or ``local:N``.

    Raises:
        ConfigError: anything else (a TLS scheduler, which needs Dask security settings, is
            named as such).
    """
    text = text.strip()
    m = re.fullmatch(r"local:(\d+)", text)
    if m:
        count = int(m.group(1))
        if not 1 <= count <= MAX_LOCAL_WORKERS:
            raise ConfigError((CLUSTER, f" {text}: local:N takes 1 to {MAX_LOCAL_WORKERS}"))
        return ClusterSpec(local_workers=count)
    if "://" not in text:
        text = f"tcp://{text}"
    parts = urlsplit(text)
    if parts.scheme != "tcp":
        raise ConfigError(
            (
                CLUSTER,
                f" {text}: a scheduler is tcp://HOST:PORT (or local:N);"
                f" {parts.scheme}:// schedulers are not supported",
            )
        )
    try:
        port = parts.port or DEFAULT_SCHEDULER_PORT
    except ValueError:
        raise ConfigError((CLUSTER, f" {text}: the port is not a number")) from None
    host = parts.hostname
    if not host or parts.path not in ("", "/") or parts.query or parts.username:
        raise ConfigError((CLUSTER, f" {text}: expected tcp://HOST:PORT or local:N"))
    shown = f"[{host}]" if ":" in host else host
    return ClusterSpec(scheduler=f"tcp://{shown}:{port}")


@dataclass(frozen=True)
class ClusterWorker:
    """One worker of the cluster, as its scheduler describes it.

    Attributes:
        address: the worker's own address (``tcp://HOST:PORT``): where its tasks go.
        host: the machine it runs on (the address's host).
        name: the name it was started with (its address when it has none).
    """

    address: str
    host: str
    name: str

    @classmethod
    def from_info(cls, address: str, info: dict[str, Any]) -> ClusterWorker:
        """A worker from the scheduler's ``scheduler_info()['workers']`` entry."""
        host = info.get("host") or urlsplit(address).hostname or address
        return cls(address, str(host), str(info.get("name", address)))


def choose_members(
    workers: Sequence[ClusterWorker], hosts: int | None, per_worker: bool
) -> list[ClusterWorker]:
    """The workers that run the load: one per distinct host (the first by address), or all
    of them with ``per_worker``; the first ``hosts`` of those when given.

    Raises:
        ConfigError: the cluster has no worker, or fewer than ``hosts``.
    """
    if not workers:
        raise ConfigError((CLUSTER, ": the cluster has no worker"))
    ordered = sorted(workers, key=lambda w: (w.host, w.address))
    if not per_worker:
        seen: dict[str, ClusterWorker] = {}
        for worker in ordered:
            seen.setdefault(worker.host, worker)
        ordered = list(seen.values())
    if hosts is not None:
        if hosts > len(ordered):
            what = "workers" if per_worker else "distinct hosts"
            raise ConfigError(
                (
                    HOSTS,
                    f" {hosts}: the cluster has {len(ordered)} {what} (of {len(workers)} workers)",
                )
            )
        ordered = ordered[:hosts]
    return ordered


def member_plans(plan: LoadPlan, members: int) -> list[LoadPlan]:
    """Each member's share of ``plan``: connections and requests split as evenly as they go,
    and each connection keeps its place in the whole run's open-loop schedule, so the members'
    rates add up to ``--rate`` exactly.

    Raises:
        ConfigError: fewer connections (or requests) than members: some member would idle.
    """
    shares = plan.split(members)
    if len(shares) < members:
        given: tuple[str | Setting, ...] = (" (", CONNECTIONS, f" {plan.connections}")
        need = f"{members} cluster members need at least {members} connections"
        if plan.requests is not None:
            given += (", ", REQUESTS, f" {plan.requests}")
            need += " and requests"
        raise ConfigError((need, *given, ")"))
    return shares


@dataclass
class MemberOutcome:
    """What one member of the fleet ended with.

    Attributes:
        index: the member's number, from 0.
        worker: the cluster worker it ran on.
        result: its merged result (over its local worker processes), when it has one.
        error: why it has none: the error it reported, or how it was lost.
        lost: the worker left the cluster (died, or was cut off) before reporting.
    """

    index: int
    worker: ClusterWorker
    result: BenchResult | None = None
    error: str | None = None
    lost: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The ``member`` event: who, and its result or error."""
        record: dict[str, Any] = {
            "index": self.index,
            "worker": self.worker.address,
            "host": self.worker.host,
            "name": self.worker.name,
            "lost": self.lost,
        }
        if self.result is not None:
            record.update(self.result.as_dict())
        if self.error is not None:
            record["error"] = self.error
        return record


def fleet_result(outcomes: Sequence[MemberOutcome]) -> BenchResult | None:
    """The fleet's result: the exact merge of every member that reported (None: none did)."""
    parts = [o.result for o in outcomes if o.result is not None]
    return merge_results(parts) if parts else None


def missing_members(outcomes: Sequence[MemberOutcome]) -> str | None:
    """One line naming the members without a result, or None when all reported."""
    gone = [o for o in outcomes if o.result is None]
    if not gone:
        return None
    return "; ".join(
        f"member {o.index + 1} ({o.worker.address}) {o.error or 'reported nothing'}" for o in gone
    )
