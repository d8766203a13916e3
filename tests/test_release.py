"""What is released agrees with itself: the version, the changelog, the
README's install line and the license."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import redis.utils

import aiokv

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_the_changelog_s_latest_release() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## (\d+\.\d+\.\d+)\b", changelog, re.M)
    assert releases, "no released version in CHANGELOG.md"
    assert aiokv.__version__ == releases[0]
    # Nothing above it but an "Unreleased" section, if any.
    headings = re.findall(r"^## (.+)$", changelog, re.M)
    assert headings[0].startswith(releases[0]) or headings[0] == "Unreleased"


def test_the_installed_metadata_names_the_same_version() -> None:
    # A stale editable install (metadata from an older version) fails here.
    assert importlib.metadata.version("aiokv") == aiokv.__version__


def test_the_readme_says_how_to_install_this_release() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    release = readme.split("## Releases", 1)[1]
    assert f"@v{aiokv.__version__}" in release
    assert f"git checkout v{aiokv.__version__}" in release


def test_the_license_file_is_the_one_pyproject_names() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # (tomllib: 3.11+)
    assert re.search(r'^license = \{ text = "MIT" \}$', pyproject, re.M)
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_the_redis_extra_brings_the_c_reply_parser_redis_py_then_uses() -> None:
    """Without hiredis, an async store on a cluster blocks its event loop while
    the client parses the server's command table in Python (docs/redis.md)."""
    requirements = importlib.metadata.requires("aiokv") or []
    redis_extra = [line for line in requirements if 'extra == "redis"' in line]
    assert any(line.startswith("hiredis") for line in redis_extra), redis_extra
    assert redis.utils.HIREDIS_AVAILABLE
