"""The package surface: ``netkit.__all__`` resolves lazily, every public name is documented,
``import netkit`` stays as cheap as it was (the command line imports it first), and the
wheel ships ``py.typed``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

import netkit
from netkit import cli

ROOT = Path(__file__).resolve().parent.parent


def test_import_netkit_loads_no_public_module() -> None:
    # A fresh interpreter: importing the package must not import what it exports.
    code = (
        "import sys, netkit\n"
        "heavy = [m for m in sys.modules if m.startswith(('netkit.', 'asyncio', 'ssl'))]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == ""


def test_the_command_line_does_not_load_the_api() -> None:
    # netkit --help must start as fast as before the API existed.
    code = "import sys, netkit.cli\nprint([m for m in sys.modules if m.startswith('netkit.api')])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"


def _loaded_after(argv: list[str]) -> set[str]:
    # Runs the command line in a fresh interpreter and lists the netkit modules, asyncio and
    # rich it imported (the exit code is the command's, not checked here).
    code = (
        "import sys\n"
        "from netkit.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "finally:\n"
        "    mods = [m for m in sys.modules if m.startswith(('netkit.', 'asyncio', 'rich', 'prompt_', 'yaml'))]\n"
        "    print('MODULES', ','.join(sorted(mods)), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("MODULES ")]
    return set(line.removeprefix("MODULES ").split(","))


def test_version_loads_no_command_asyncio_or_rich() -> None:
    # issue 18: `netkit --version` answers before any subcommand module, asyncio or rich is
    # imported (it took 3.4-3.9x `python3 -c 'import asyncio, ssl'` when it imported them all).
    loaded = _loaded_after(["--version"])
    assert not {m for m in loaded if m.startswith(("netkit.commands", "asyncio", "rich"))}


def test_a_command_loads_only_its_own_module() -> None:
    loaded = _loaded_after(["tcp-echo", "client", "127.0.0.1:1", "-c", "1"])
    commands = {m for m in loaded if m.startswith("netkit.commands.")}
    assert "netkit.commands.tcp_echo" in commands
    others = {f"netkit.commands.{m}" for m in cli.COMMANDS.values()} - {"netkit.commands.tcp_echo"}
    assert not commands & others
    assert "netkit.net.bench.engine" not in loaded  # bench's driver: the largest chain


def test_a_ws_client_run_without_a_prompt_or_script_loads_neither_library() -> None:
    # Scripts and CI run ws-client on pipes: the terminal prompt's library is not for them.
    loaded = _loaded_after(["ws-client", "ws://127.0.0.1:1/", "hello", "--open-timeout", "1s"])
    assert "netkit.commands.ws_client" in loaded
    assert not {m for m in loaded if m.startswith(("prompt_toolkit", "yaml"))}  # nor PyYAML


def test_every_command_module_is_listed_and_named_as_it_is_run() -> None:
    import typer.main

    root = typer.main.get_command(cli.app)
    ctx = click.Context(root, info_name="netkit")
    assert isinstance(root, click.Group)
    assert root.list_commands(ctx) == list(cli.COMMANDS)
    for name in cli.COMMANDS:
        command = root.get_command(ctx, name)
        assert command is not None and command.name == name
    assert root.get_command(ctx, "nope") is None
    # Every module of netkit/commands that defines a command app (the others are shared
    # option groups, presenters and helpers of one command).
    apps = {
        p.stem for p in (ROOT / "netkit" / "commands").glob("*.py") if "\napp = " in p.read_text()
    }
    assert set(cli.COMMANDS.values()) == apps


@pytest.mark.parametrize("name", sorted(set(netkit.__all__) - {"__version__"}))
def test_public_name_resolves_with_a_docstring(name: str) -> None:
    value = getattr(netkit, name)
    doc = value.__doc__ or ""
    assert len(doc.strip()) > 20, f"netkit.{name} needs a docstring"
    assert not doc.startswith(f"{name}("), f"netkit.{name} has only dataclass's generated doc"
    assert name in dir(netkit)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        netkit.nope  # noqa: B018


def test_all_has_no_duplicates() -> None:
    assert len(netkit.__all__) == len(set(netkit.__all__))


@pytest.mark.timeout(180)
def test_wheel_ships_py_typed(tmp_path: Path) -> None:
    # Build the wheel in-process with the project's own backend (no network, no isolation).
    code = (
        "import os, sys, setuptools.build_meta as b\n"
        f"os.chdir({str(ROOT)!r})\n"
        f"print(b.build_wheel({str(tmp_path)!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=170, check=True
    )
    wheel = tmp_path / out.stdout.strip().splitlines()[-1]
    assert "netkit/py.typed" in zipfile.ZipFile(wheel).namelist()


def test_type_checking_imports_match_the_table() -> None:
    # Type checkers read the TYPE_CHECKING block, the runtime reads _EXPORTS: they must agree.
    import ast

    tree = ast.parse((ROOT / "netkit" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If))
    seen = {
        alias.asname: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name
    }
    assert seen == netkit._EXPORTS
