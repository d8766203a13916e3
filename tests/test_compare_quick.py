"""``benchmarks/compare.py --quick`` produces its report; no speed is ever asserted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPARE = ROOT / "benchmarks" / "compare.py"
BEGIN = "<!-- compare.py: begin -->"
END = "<!-- compare.py: end -->"

# Every system of the suite by the name its row shows, and whether it needs redis-server.
SYSTEMS = {
    "aiokv async flush": False, "aiokv async fsync": False, "aiokv async buffered": False,
    "aiokv sync flush": False, "aiokv sync fsync": False, "aiokv sync buffered": False,
    "seed JSON design": False, "diskcache": False, "sqlitedict": False, "shelve": False,
    "semidbm": False, "pickledb": False, "aiosqlite": False,
    "redis everysec": True, "redis everysec (sync client)": True, "redis always": True,
    "redis always (sync client)": True,
}


def figures_rows(section: str) -> dict[str, str]:
    """The rows of the "Figures" table, by system name."""
    table = section.split("### Figures", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = line
    return rows


def docs_files() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((ROOT / "docs").iterdir())}


@pytest.mark.slow
def test_quick_run_writes_the_page_it_is_given_and_nothing_in_docs(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nKept text.\n", encoding="utf-8")
    docs_before = docs_files()
    # The suite makes its stores under the working directory: give it its own.
    done = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--page", str(page)],
        cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {page} (" in done.stdout
    # Asked for a page only: no chart (no plotting stack needed), docs/ untouched.
    assert sorted(os.listdir(tmp_path)) == ["benchmarks.md"]
    assert docs_files() == docs_before

    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nKept text.\n")
    assert text.count(BEGIN) == 1
    assert text.count(END) == 1
    section = text[text.index(BEGIN):text.index(END)]
    rows = figures_rows(section)
    have_redis = shutil.which("redis-server") is not None
    for name, needs_redis in SYSTEMS.items():
        assert name in rows, f"no row for {name}"
        if needs_redis and not have_redis:
            assert "skipped" in rows[name]
        else:
            assert "skipped" not in rows[name]
    assert re.search(r"\| target \| measured \| verdict \|", section)
    growth = section.split("### W9 in detail", 1)[1].split("\n\n", 2)[1].splitlines()
    sizes = growth[0].count("| set ") - 1  # one column per store size, one for the growth
    assert sizes >= 2
    assert growth[0].count("| get ") == sizes + 1
    for name in ("aiokv async flush", "plain dict"):
        row = next(line for line in growth if line.startswith(f"| {name} | "))
        assert row.count(" µs") == 2 * sizes, row  # a set and a get at each size
        assert row.count("x |") == 2, row  # how each grew
    assert "](benchmarks.png)" in section
    w10 = section.split("### W10: aiokv on Redis against raw redis-py", 1)[1]
    if have_redis:
        assert "| sync get_all of 10,000 keys |" in w10 and "keys/s" in w10
        assert re.search(r"\| W10: every call on Redis <= 1.15 x raw redis-py \| worst: .* \| "
                         r"(PASS|MISS) \|", section)
    else:
        assert "skipped: no redis-server on PATH" in w10

    # The report is printed too, whether or not it is written anywhere.
    assert BEGIN not in done.stdout and "### Figures" in done.stdout
