"""Fixtures for the public API's tests: ``run`` runs each coroutine, bounded in time, on asyncio
and on uvloop (the API must work on the loop its user picked): the I/O layer's fixture."""

from __future__ import annotations

from tests.net.conftest import run

__all__ = ["run"]
