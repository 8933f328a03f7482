"""Fixtures shared across the test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dask_cluster import DaskCluster, dask_cluster


@pytest.fixture(scope="session")
def dask_two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A Dask scheduler and two workers, on 127.0.0.1 and 127.0.0.2 (two distinct hosts to
    the scheduler), started once for the session: tests that add a worker remove it."""
    with dask_cluster(tmp_path_factory.mktemp("dask"), ["127.0.0.1", "127.0.0.2"]) as cluster:
        yield cluster
