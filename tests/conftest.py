"""Session setup: a private home for the whole session, the fast/slow tiers, and the shared
fixtures (a private array cache, one uninterrupted smoke study, the tiny run)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from runhelp import run_cli
from tinyrun import tiny_run

# Fixtures that run a whole study, a Ray cluster or every conversion: any test using one of them,
# directly or through another fixture, is `slow` (not in `make test`, only in `make test-all`).
SLOW_FIXTURES = {"smoke_run", "tile_run", "ray_head", "compressed"}

# --- a private home: no test reads or writes the user's ~/.ray, ~/.cache, ~/.keras, ./mlruns ---

_SAVED_ENV: dict[str, str | None] = {}
_HOME: list[Path] = []


def _set_env(name: str, value: str | None) -> None:
    _SAVED_ENV.setdefault(name, os.environ.get(name))
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def pytest_configure(config):
    """Before collection (imports of keras and matplotlib read their folders then): HOME and
    the XDG folders point into a fresh folder for the session, inherited by every child process.
    UNETQ_DATA_DIR and UNETQ_SHARED_DATA stay: the tests that need real data read them."""
    home = Path(tempfile.mkdtemp(prefix="unetq-home-"))  # short: Ray's socket paths go under it
    _HOME.append(home)
    _set_env("HOME", str(home))
    xdg = {"CACHE": ".cache", "CONFIG": ".config", "DATA": ".local/share", "STATE": ".local/state"}
    for kind, sub in xdg.items():
        _set_env(f"XDG_{kind}_HOME", str(home / sub))
    defaults = {
        "KERAS_HOME": home / ".keras",
        "MPLCONFIGDIR": home / ".config" / "matplotlib",
        "UNETQ_CACHE_DIR": home / ".cache" / "unetq",
    }
    for name, path in defaults.items():
        if not os.environ.get(name):
            _set_env(name, str(path))
    # MLflow's default store would be ./mlruns in the repository; Ray's /tmp/ray/ray_current_cluster
    # would let `ray.init()` join someone else's cluster; a token or address of the user's own
    # cluster is not for the tests either.
    _set_env("MLFLOW_TRACKING_URI", (home / "mlruns").as_uri())
    _set_env("RAY_TMPDIR", str(home))  # Ray's sessions in HOME/ray
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_REGISTRY_URI"):
        _set_env(name, None)


def pytest_unconfigure(config):
    for name, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _SAVED_ENV.clear()
    for home in _HOME:
        shutil.rmtree(home, ignore_errors=True)
    _HOME.clear()


# --- tiers --------------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config, items):
    """Mark slow every test that uses a slow fixture (fixturenames is the transitive closure)."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- shared fixtures ----------------------------------------------------------------------------


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
