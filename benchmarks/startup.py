"""How long netkit takes to start, against ``python3 -c 'import asyncio, ssl'`` (issue 18).

Usage::

    python benchmarks/startup.py [--runs N] [--json [PATH]]

CI scripts call netkit many times, so its start-up is a cost of its own. Each command below
runs ``--runs`` times (31 by default), interleaved with the anchor so that noise on the machine
falls on both; the figures are medians of wall time and of the child's CPU time (user + sys,
from ``getrusage``), and the ratio is netkit's over the anchor's:

- the anchor: ``python3 -c 'import asyncio, ssl'`` with the same interpreter;
- ``netkit --version`` (goal: at most 1.5x the anchor);
- ``netkit tcp-echo client 127.0.0.1:1 -c 1`` refused at once (a port nothing listens on):
  one command's whole path, from parsing to the one-line error;
- ``netkit --help``, which loads every command to list them (for information).

Measure an installed netkit (``pip install .``), not an editable one: an editable install
adds its import hook's cost to every start.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

from harness import add_json_option, machine, med, netkit_command, rotated, target_line, write_json

GOAL = 1.5  # netkit --version at most this many times the anchor


def timed(cmd: list[str]) -> tuple[float, float]:
    """One run of ``cmd``: (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=31)
    add_json_option(parser)
    args = parser.parse_args()
    netkit = netkit_command()
    commands = {
        "python3 -c 'import asyncio, ssl'": [sys.executable, "-c", "import asyncio, ssl"],
        "netkit --version": [*netkit, "--version"],
        "netkit tcp-echo client (refused)": [
            *netkit,
            "tcp-echo",
            "client",
            "127.0.0.1:1",
            "-c",
            "1",
        ],
        "netkit --help": [*netkit, "--help"],
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for run in range(args.runs):
        for name in rotated(list(commands), run):
            wall, cpu = timed(commands[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
    anchor = "python3 -c 'import asyncio, ssl'"
    info = machine()
    print(
        f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu']}), kernel "
        f"{info['kernel']}, Python {info['python']}, commit {info['commit']}; "
        f"{args.runs} interleaved runs, medians.\n"
    )
    print("| command | wall ms | CPU ms | wall / anchor | CPU / anchor |")
    print("|---|---:|---:|---:|---:|")
    for name in commands:
        w, c = med(walls[name]), med(cpus[name])
        rw, rc = w / med(walls[anchor]), c / med(cpus[anchor])
        print(f"| `{name}` | {w * 1000:.0f} | {c * 1000:.0f} | {rw:.2f}x | {rc:.2f}x |")
    version = med(walls["netkit --version"]) / med(walls[anchor])
    print()
    print(
        target_line(
            f"netkit --version {version:.2f}x the anchor (goal <= {GOAL}x)", version <= GOAL
        )
    )
    write_json({"machine": info, "wall_s": walls, "cpu_s": cpus}, args.json)


if __name__ == "__main__":
    main()
