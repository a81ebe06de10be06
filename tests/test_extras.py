"""The base install: without the `ray` and `mlflow` extras the local study runs, and asking for
either ends as one line naming the extra to install. The extras are hidden from the child
process as a plain `pip install unetq` would leave them: not importable at all."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from csvcompare import assert_same_results

UNETQ = Path(sys.executable).parent / "unetq"
ABSENT = """
import sys

class _Absent:  # what `import ray` meets when unetq was installed without its extras
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"ray", "mlflow"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""


@pytest.fixture
def plain_env(tmp_path, cache_env) -> dict:
    site = tmp_path / "plain-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(ABSENT)
    env = {**cache_env, "PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True)
    assert probe.returncode == 1 and b"No module named 'ray'" in probe.stderr
    return env


def unetq(args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(UNETQ), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.parametrize(
    ("option", "extra", "feature"),
    [
        (["--executor", "ray"], "ray", "--executor ray"),
        (["--mlflow", "sqlite:///mlflow.db"], "mlflow", "--mlflow"),
    ],
)
def test_asking_for_a_missing_extra_is_one_line_naming_it(
    plain_env, tmp_path, option, extra, feature
):
    out = tmp_path / "smoke"
    proc = unetq(["study", "--preset", "smoke", "--out", out, *option], plain_env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {feature} needs {extra}, which is not installed: pip install 'unetq[{extra}]'"
    ]
    assert "Traceback" not in proc.stdout
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow
def test_the_local_study_runs_without_the_extras(plain_env, smoke_run, tmp_path):
    out = tmp_path / "smoke"
    shutil.copytree(smoke_run, out)
    (out / "model_performance_average_results.csv").unlink()  # the merge must run again
    proc = unetq(["study", "--preset", "smoke", "--out", out], plain_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_results(smoke_run, out)


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--executor", "dask"], "error: unknown executor 'dask' (choose from local, ray)"),
        (["--ray-address", "auto"], "error: --ray-address needs --executor ray"),
    ],
)
def test_an_executor_that_cannot_run_is_one_line_before_anything_is_written(
    cache_env, tmp_path, option, says
):
    out = tmp_path / "smoke"
    proc = unetq(["study", "--preset", "smoke", "--out", out, *option], cache_env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [says]
    assert not out.exists()
