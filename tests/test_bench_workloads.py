"""``benchmarks/bench_workloads.py`` reports each workload against the float set.

Tiny sizes: these check the report and the bookkeeping (children, worktree,
files), never a speed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_workloads.py"
TINY = ["--quick", "--calls", "600", "--keys", "50", "--ttl-keys", "20"]
WORKLOAD_LINES = [
    "set(key, time.time())",
    "set(key)",
    "incr(key, ttl=60)",
    "set(key, i, ttl=60)",
    'set(key, {"user": "bob", "n": i, "ok": True})',
    "set(key, time.time()), 20 TTL keys held",
]
TABLES = ['AioKV (async), durability "flush"', 'KV (blocking), durability "flush"']


def docs_files() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((ROOT / "docs").iterdir())}


def run_script(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *TINY, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def summary_tables(output: str) -> dict[str, list[str]]:
    """Each shell's table from the summary: its title, then header and rows."""
    summary = output.split("\nSummary (", 1)[1]
    tables = {}
    for title in TABLES:
        block = summary.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]
        tables[title] = block.splitlines()
    return tables


def row_of(table: list[str], workload: str) -> str:
    # Rows start with the workload, padded to the column's width.
    return next(line for line in table[1:] if re.match(re.escape(workload) + r"\s{2}", line))


def test_a_quick_run_reports_every_workload_against_the_float_set(tmp_path: Path) -> None:
    markdown = tmp_path / "workloads.md"
    docs_before = docs_files()
    output = run_script("--markdown", str(markdown), cwd=tmp_path)

    for title, table in summary_tables(output).items():
        assert table[0].startswith("workload"), title
        assert "vs float set" in table[0]
        assert len(table) == 1 + len(WORKLOAD_LINES), table
        baseline = row_of(table, WORKLOAD_LINES[0])
        assert re.search(r"[\d,]+/s .*1\.00x .*baseline", baseline), baseline
        for workload in WORKLOAD_LINES[1:]:
            row = row_of(table, workload)
            # A rate, a ratio to the float set, the target and a verdict: never an error.
            assert re.search(r"[\d,]+/s .*\d+\.\d\dx .*>= \d\.\d\dx +(PASS|MISS)$", row), row

    # Only the page asked for is written: the stores' directory is gone, docs/ untouched.
    assert sorted(os.listdir(tmp_path)) == ["workloads.md"]
    assert docs_files() == docs_before
    page = markdown.read_text(encoding="utf-8")
    for title in TABLES:
        assert f"### {title}" in page
    assert page.count("| set(key) |") == 2


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_against_a_revision_alternates_the_builds_and_removes_its_checkout(
        tmp_path: Path) -> None:
    def worktrees() -> str:
        return subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout

    before = worktrees()
    output = run_script("--repetitions", "2", "--against", "HEAD", cwd=tmp_path)

    # Repetition 1 measures this tree first, repetition 2 the revision first.
    runs = re.findall(r"^  repetition (\d), (async|sync), (this tree|HEAD):", output, re.M)
    assert runs == [("1", "async", "this tree"), ("1", "async", "HEAD"),
                    ("1", "sync", "this tree"), ("1", "sync", "HEAD"),
                    ("2", "async", "HEAD"), ("2", "async", "this tree"),
                    ("2", "sync", "HEAD"), ("2", "sync", "this tree")]
    for table in summary_tables(output).values():
        assert "new/HEAD" in table[0]
        for workload in WORKLOAD_LINES:
            # new/REV as a ratio and a percentage, for every workload.
            assert re.search(r"\d\.\d{3} \([+-]\d+\.\d %\)", row_of(table, workload))
    assert worktrees() == before
    assert os.listdir(tmp_path) == []
