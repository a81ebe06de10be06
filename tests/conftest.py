"""Session fixtures: a private array cache and one uninterrupted smoke study."""

import os
from pathlib import Path

import pytest

from runhelp import run_cli
from tinyrun import tiny_run


@pytest.fixture(scope="session")
def cache_env(tmp_path_factory):
    """Environment for CLI subprocesses: a private array cache, no real dataset."""
    env = dict(os.environ)
    env["UNETQ_CACHE_DIR"] = str(tmp_path_factory.mktemp("unetq-cache"))
    env.pop("UNETQ_DATA_DIR", None)
    return env


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, cache_env) -> Path:
    """One uninterrupted smoke study, shared by the study and report tests."""
    out = tmp_path_factory.mktemp("runs") / "smoke"
    run_cli(["study", "--preset", "smoke", "--out", out], env=cache_env)
    return out


@pytest.fixture
def tiny(tmp_path_factory, monkeypatch):
    """The session's tiny run folder (pristine: copy before changing it), its cache in use."""
    built = tiny_run(tmp_path_factory)
    monkeypatch.setenv("UNETQ_CACHE_DIR", str(built.cache_dir))
    monkeypatch.delenv("UNETQ_DATA_DIR", raising=False)
    return built
