"""Shared fixtures: offline environment, an isolated data dir, and the real data in ../shared/data (skip if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatapp.cli import set_offline_env

set_offline_env()

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CTSCRIBE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path to a file in ../shared/data; the calling test is skipped when it is absent (users have no shared/)."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture
def shared_data():
    return shared_path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Each test session gets its own CTSCRIBE_HOME so caches and stores never touch the user's."""
    home = os.environ.get("CTSCRIBE_TEST_HOME")
    if not home:
        home = str(tmp_path_factory.getbasetemp() / "ctscribe-home")
        os.environ["CTSCRIBE_TEST_HOME"] = home
    monkeypatch.setenv("CTSCRIBE_HOME", home)
    yield


@pytest.fixture(scope="session")
def weights_cache_dir():
    """A persistent cache for converted pretrained weights shared by tests (saves re-conversion between runs)."""
    d = Path(os.environ.get("CTSCRIBE_WEIGHTS_CACHE", ROOT / ".venv" / "ctscribe-cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d
