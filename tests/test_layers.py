"""The import layering of STYLE.md, enforced: the sans-I/O core does no I/O and knows no CLI,
and the I/O layer knows no CLI.

- ``netkit/core``: no asyncio, socket, ssl, selectors, rich or typer, and nothing from
  netkit.net, netkit.commands or netkit.console.
- ``netkit/net``: nothing from netkit.commands or netkit.console, no rich or typer.
- ``netkit/api``: the same (the public API is built on net/ and core/, not on the CLI).

Every module is parsed with :mod:`ast` (not imported), so an import inside a function or under
``TYPE_CHECKING`` counts too, and relative imports are resolved against the module's package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "netkit"

FORBIDDEN = {
    "core": (
        "asyncio",
        "socket",
        "ssl",
        "selectors",
        "rich",
        "typer",
        "netkit.net",
        "netkit.commands",
        "netkit.console",
    ),
    "net": ("netkit.commands", "netkit.console", "rich", "typer"),
    # The public API composes net/ and core/; the CLI's layer is not a library.
    "api": ("netkit.commands", "netkit.console", "rich", "typer"),
}

# Known violations, each with the issue that removes it. Keep this empty: move the code to the
# layer it belongs to instead of adding to it.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module name ``source`` imports, with its line: ``import a.b`` gives ``a.b``,
    ``from a import b`` gives ``a.b`` (b may be a module), relative imports are made absolute
    against ``module``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if not is_package:
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(layer: str, source: str, module: str, *, is_package: bool = False) -> list[str]:
    out = []
    for line, name in imported_names(source, module, is_package=is_package):
        for banned in FORBIDDEN[layer]:
            if (name == banned or name.startswith(banned + ".")) and (
                module,
                banned,
            ) not in ALLOWED:
                out.append(f"{module} (line {line}) imports {name}: netkit/{layer} must not "
                           f"import {banned}")  # fmt: skip
    return out


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    paths = modules(layer)
    assert paths, f"no modules found under netkit/{layer}"
    problems = []
    for path in paths:
        problems += violations(
            layer,
            path.read_text(),
            module_name(path),
            is_package=path.name == "__init__.py",
        )
    assert not problems, "layering broken (see STYLE.md):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("layer", "module", "source", "culprit"),
    [
        ("core", "netkit.core.x", "import asyncio", "asyncio"),
        ("core", "netkit.core.x", "import socket as s", "socket"),
        ("core", "netkit.core.x", "from ssl import SSLContext", "ssl.SSLContext"),
        ("core", "netkit.core.x", "def f():\n    import selectors", "selectors"),
        ("core", "netkit.core.x", "from rich.markup import escape", "rich.markup.escape"),
        ("core", "netkit.core.x", "import typer", "typer"),
        ("core", "netkit.core.x", "from netkit.net.sockets import x", "netkit.net.sockets.x"),
        ("core", "netkit.core.x", "from netkit import net", "netkit.net"),
        ("core", "netkit.core.x", "from ..net import relay", "netkit.net.relay"),
        ("core", "netkit.core.ws.x", "from ...console import Output", "netkit.console.Output"),
        ("core", "netkit.core.x", "if TYPE_CHECKING:\n    import ssl", "ssl"),
        ("net", "netkit.net.x", "from netkit.commands import options", "netkit.commands.options"),
        ("net", "netkit.net.x", "from netkit.console import Output", "netkit.console.Output"),
        ("net", "netkit.net.x", "from ..commands.bench import y", "netkit.commands.bench.y"),
        ("net", "netkit.net.x", "import rich.console", "rich.console"),
        ("net", "netkit.net.x", "import typer", "typer"),
    ],
)
def test_checker_names_module_and_import(layer, module, source, culprit):
    found = violations(layer, source, module)
    assert len(found) == 1, found
    assert found[0].startswith(f"{module} (line ") and f"imports {culprit}:" in found[0]


@pytest.mark.parametrize(
    ("layer", "module", "source"),
    [
        ("core", "netkit.core.x", "from netkit.errors import ConfigError"),
        ("core", "netkit.core.x", "from .units import parse_size"),
        ("core", "netkit.core.ws.x", "from ..addresses import WSURL"),
        ("core", "netkit.core.x", "import socketserver_lookalike"),
        ("core", "netkit.core.x", "import sslkeylog"),
        ("net", "netkit.net.x", "import asyncio, socket, ssl"),
        ("net", "netkit.net.x", "from netkit.core.bench import LoadPlan"),
        ("net", "netkit.net.x", "from netkit.status import ExitStatus"),
    ],
)
def test_checker_allows_the_layers_below(layer, module, source):
    assert violations(layer, source, module) == []
