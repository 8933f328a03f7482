#!/usr/bin/env python3
"""Regenerate netkit's man pages and shell completions from the CLI's own definitions.

    python tools/gendocs.py             # rewrite man/*.1 and completions/*
    python tools/gendocs.py --out DIR   # write DIR/man and DIR/completions instead

Run it after adding or changing a command, option or help text; ``tests/test_docs.py`` fails
while the committed files differ from what this writes. The commands, options, defaults and
help come from click's command objects (``typer.main.get_command(netkit.cli.app)``), the exit
codes from ``netkit/status.py``; the hand-written parts (DESCRIPTION, JSON OUTPUT, EXAMPLES,
SEE ALSO, and the shared ENDPOINTS section) are in ``tools/mansrc/``. A top-level command
without a ``tools/mansrc/netkit-NAME.md`` still gets a page, with a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
MANSRC = TOOLS / "mansrc"
COMPLETION_FILES = ("netkit.bash", "_netkit", "netkit.fish")

sys.path.insert(0, str(TOOLS))
sys.path.insert(1, str(ROOT))

import cli_model  # noqa: E402
import manpage  # noqa: E402
import shell_completions  # noqa: E402


def generate() -> dict[str, str]:
    """Every generated file, as ``{"man/netkit.1": text, "completions/_netkit": text, ...}``."""
    from netkit import __version__

    root = cli_model.load_cli()
    exit_status = cli_model.load_exit_codes()
    shared = manpage.load_handwritten(MANSRC, "endpoints")
    files: dict[str, str] = {}
    for command in [root, *root.subcommands]:
        name = manpage.page_name(command)
        handwritten = manpage.load_handwritten(MANSRC, name)
        if not handwritten:
            print(
                f"gendocs: warning: no tools/mansrc/{name}.md: {name}.1 has no examples",
                file=sys.stderr,
            )
        page = manpage.render_page(
            command,
            root=root,
            version=__version__,
            handwritten=handwritten,
            shared=shared,
            exit_status=exit_status,
        )
        files[f"man/{page.filename}"] = page.text
    files["completions/netkit.bash"] = shell_completions.bash(root)
    files["completions/_netkit"] = shell_completions.zsh(root)
    files["completions/netkit.fish"] = shell_completions.fish(root)
    return files


def write(files: dict[str, str], out: Path) -> list[str]:
    """Write ``files`` under ``out``; remove generated files that no longer belong. Returns changes."""
    changed: list[str] = []
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(rel)
    stale = [p for p in (out / "man").glob("netkit*.1") if f"man/{p.name}" not in files]
    for path in stale:
        path.unlink()
        changed.append(f"man/{path.name} (removed)")
    return changed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="write DIR/man and DIR/completions")
    args = parser.parse_args(argv)
    changed = write(generate(), args.out)
    for rel in changed:
        print(f"wrote {rel}")
    if not changed:
        print("man pages and completions are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
