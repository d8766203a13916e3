"""Every Python snippet of the README and the docs runs as written.

Each ```python block is written to a file of its own and run in a fresh
interpreter, in an empty directory (the snippets make their stores there),
as someone pasting it would. A snippet for a web framework that is not a
dependency of aiokv (FastAPI, aiohttp) is compiled instead of run: the
test says which, so that none is left out silently.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "docs/api.md", "docs/redis.md", "docs/guarantees.md"]
FRAMEWORKS = ("fastapi", "aiohttp")
"""Third-party packages a snippet may show aiokv inside, not installed with it."""


def snippets() -> list[tuple[str, str]]:
    found = []
    for name in DOCUMENTS:
        text = (ROOT / name).read_text(encoding="utf-8")
        for number, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S), 1):
            found.append((f"{name}#{number}", block))
    return found


SNIPPETS = snippets()


def needs(code: str) -> list[str]:
    """The frameworks a snippet imports that are not installed here."""
    return [name for name in FRAMEWORKS
            if re.search(rf"^(from|import) {name}\b", code, re.M)
            and importlib.util.find_spec(name) is None]


def test_the_documents_have_snippets_to_run() -> None:
    assert len(SNIPPETS) >= 10


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[where for where, _ in SNIPPETS])
def test_the_snippet_runs_as_written(where: str, code: str, tmp_path: Path) -> None:
    program = tmp_path / "snippet.py"
    program.write_text(code, encoding="utf-8")
    missing = needs(code)
    if missing:
        compile(code, where, "exec")  # complete as written; runs where those are installed
        print(f"{where}: compiled only (needs {', '.join(missing)})")
        return
    done = subprocess.run([sys.executable, str(program)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, f"{where} failed:\n{code}\n{done.stderr[-2000:]}"


def test_every_test_the_docs_name_as_proof_exists() -> None:
    """A guarantee is only as good as the test it names: a renamed or
    deleted test must not leave a row pointing at nothing."""
    defined = set()
    for path in (ROOT / "tests").glob("*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"),
                                  re.M))
    files = {path.name for path in (ROOT / "tests").glob("*.py")}
    missing = []
    for name in ("docs/guarantees.md", "docs/redis.md", "docs/api.md", "README.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        missing += [f"{name}: {test}" for test in re.findall(r"`(test_\w+)`", text)
                    if test not in defined]
        missing += [f"{name}: {file}" for file in re.findall(r"`tests/(\w+\.py)`", text)
                    if file not in files]
    assert len(defined) > 100
    assert missing == []
