"""Time WebSocket XOR masking methods side by side and pick the int/numpy crossover.

Usage::

    python benchmarks/ws_mask.py [--runs 7]

Methods, each unmasking a ``bytearray`` in place the way the receive path does:

- ``int``: ``int.from_bytes(payload) ^ int.from_bytes(key * n)`` then ``to_bytes`` (pure Python).
- ``numpy64``: ``np.frombuffer(view, uint64) ^= key8`` in place, int trick for the < 8-byte tail.
- ``numpy8``: ``np.frombuffer(view, uint8) ^= np.resize(key, n)`` (the naive numpy way).
- ``websockets``: ``websockets.speedups.apply_mask`` (C extension, the anchor; returns bytes).
- ``netkit``: :func:`netkit.core.ws.mask.unmask_into` as shipped (int below the threshold).

Each figure is the median over ``--runs`` runs of the mean time per call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netkit.core.ws import mask as ws_mask

SIZES = [16, 125, 256, 512, 1024, 2048, 4096, 16 * 1024, 64 * 1024, 1024 * 1024]
KEY = b"\x37\xfa\x21\x3d"


def method_int(buf: bytearray) -> None:
    view = memoryview(buf)
    view[:] = ws_mask._xor_int(view, KEY)


def build_methods() -> dict[str, Callable[[bytearray], object]]:
    methods: dict[str, Callable[[bytearray], object]] = {"int": method_int}
    try:
        import numpy as np
    except ImportError:
        print("numpy not installed: numpy methods skipped", file=sys.stderr)
    else:

        def method_numpy64(buf: bytearray) -> None:
            ws_mask._unmask_numpy(memoryview(buf), KEY)

        def method_numpy8(buf: bytearray) -> None:
            arr = np.frombuffer(buf, dtype=np.uint8)
            arr ^= np.resize(np.frombuffer(KEY, dtype=np.uint8), len(buf))

        methods["numpy64"] = method_numpy64
        methods["numpy8"] = method_numpy8
    try:
        from websockets.speedups import apply_mask  # type: ignore[import-not-found]
    except ImportError:
        print("websockets.speedups not available: anchor skipped", file=sys.stderr)
    else:
        methods["websockets(C)"] = lambda buf: apply_mask(buf, KEY)
    methods["netkit"] = lambda buf: ws_mask.unmask_into(memoryview(buf), KEY)
    return methods


def time_call(func: Callable[[bytearray], object], size: int, runs: int) -> float:
    buf = bytearray(os.urandom(size))
    # Aim at ~20 ms per run whatever the size.
    number = max(1, int(20_000_000 / (size * 5 + 2_000)))
    samples = timeit.repeat(lambda: func(buf), number=number, repeat=runs)
    return statistics.median(samples) / number


def fmt(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:9.2f} µs" if us < 10_000 else f"{us / 1000:9.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (median taken)")
    args = parser.parse_args()
    methods = build_methods()
    names = list(methods)
    results: dict[int, dict[str, float]] = {}
    print(f"{'size':>9} " + " ".join(f"{n:>13}" for n in names))
    for size in SIZES:
        results[size] = {n: time_call(methods[n], size, args.runs) for n in names}
        print(f"{size:>9} " + " ".join(f"{fmt(results[size][n]):>13}" for n in names))
    if "numpy64" in results[SIZES[0]]:
        faster = [s for s in SIZES if results[s]["numpy64"] < results[s]["int"]]
        crossover = min(faster) if faster else None
        print(f"\nnumpy64 beats int from {crossover} bytes on this machine")
    print(
        f"netkit threshold: NUMPY_THRESHOLD = {ws_mask.NUMPY_THRESHOLD} bytes "
        f"(numpy {'available' if ws_mask.have_numpy() else 'missing'})"
    )


if __name__ == "__main__":
    main()
