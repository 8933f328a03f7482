"""Which event loop netkit runs on: ``auto`` (uvloop when installed), ``uvloop`` or ``asyncio``.

Kept apart from :mod:`netkit.net.runtime` so that naming the loop (``netkit --version``, the
root ``--loop`` option) imports no asyncio.
"""

from __future__ import annotations

import importlib.util

from netkit.errors import ConfigError, Setting

LOOP_CHOICES = ("auto", "uvloop", "asyncio")
LOOP = Setting("loop")
_loop_choice = "auto"


def uvloop_available() -> bool:
    """True when uvloop can be imported."""
    return importlib.util.find_spec("uvloop") is not None


def set_loop(choice: str) -> None:
    """Choose the event loop for every later :func:`run`: auto, uvloop or asyncio.

    Raises:
        ConfigError: ``uvloop`` was asked for and is not installed.
    """
    global _loop_choice
    if choice not in LOOP_CHOICES:
        raise ConfigError((LOOP, f" {choice!r}: choose one of {', '.join(LOOP_CHOICES)}"))
    if choice == "uvloop" and not uvloop_available():
        raise ConfigError((LOOP, " uvloop: uvloop is not installed on this Python"))
    _loop_choice = choice


def loop_name() -> str:
    """The loop :func:`run` will use: ``uvloop`` or ``asyncio``."""
    if _loop_choice == "auto":
        return "uvloop" if uvloop_available() else "asyncio"
    return _loop_choice
