"""Every Python example in docs/ (and the README's API example) runs, as a reader pasting it
into a file would run it.

Each ```python block of docs/*.md, and each one in README.md right after an
``<!-- api-example -->`` line, is a complete program: it is written to a file and run with
this interpreter in a fresh process (on loopback sockets only), bounded by a timeout, and must
exit 0. The examples check their own results with ``assert``, so an API change that breaks one
fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
README_MARK = "<!-- api-example -->\n"
EXAMPLE_TIMEOUT = 60


def examples() -> list[tuple[str, str]]:
    """(``file:line``, source) of every Python block in docs/."""
    found = []
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.name}:{line}", match.group(1)))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for match in BLOCK.finditer(readme):
        if readme[: match.start()].endswith(README_MARK):
            line = readme.count("\n", 0, match.start()) + 1
            found.append((f"README.md:{line}", match.group(1)))
    return found


def test_docs_have_examples() -> None:
    where = [w for w, _ in examples()]
    assert sum(w.startswith("api.md") for w in where) >= 8, "docs/api.md lost its examples"
    assert any(w.startswith("README.md") for w in where), "the README's API example is gone"


@pytest.mark.timeout(EXAMPLE_TIMEOUT + 10)
@pytest.mark.parametrize(("where", "source"), examples(), ids=[w for w, _ in examples()])
def test_example_runs(where: str, source: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(source, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
