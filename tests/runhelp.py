"""Shared helpers for tests that run the CLI and need real data (imported by test modules)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(args, env=None, timeout=900, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "unetq.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"unetq {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc


def shared_data(name: str) -> Path:
    root = os.environ.get("UNETQ_SHARED_DATA")
    if not root or not (Path(root) / name).is_dir():
        pytest.skip(f"{name} not available (set UNETQ_SHARED_DATA to ../shared/data)")
    return Path(root) / name


def pets_sample() -> Path:
    root = os.environ.get("UNETQ_DATA_DIR")
    if not root or not (Path(root) / "images").is_dir():
        pytest.skip("Oxford-IIIT Pet sample not available (set UNETQ_DATA_DIR)")
    return Path(root)


def child_module(folder: Path, name: str, source: str, monkeypatch) -> Path:
    """Write module `name` into `folder` and put the folder on PYTHONPATH, so child processes
    (the bench's probes) can import it (a fake runtime, say)."""
    import textwrap

    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    )
    return path
