"""The smoke study end to end: outputs, and resume after SIGKILL at a random stage."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from runhelp import run_cli

pytestmark = pytest.mark.slow

CSVS = [
    "trained_models_info.csv",
    "compressed_models_info.csv",
    "model_performance_individual_results.csv",
    "model_performance_average_results.csv",
    "robustness.csv",
]
# Columns that measure time or memory differ between any two runs; everything else must match.
TIMING_WORDS = (
    "time",
    "second",
    "latency",
    "ms_",
    "rss",
    "memory",
    "images_per_s",
    "load_av",
    "speedup",
)

# A file that shows the study has entered a stage (checked in this order by the poller).
STAGE_MARKERS = {
    "train": "models/.train",
    "compress": "models/*/tflite-fp32.tflite",
    "evaluate": ".eval",
    "bench": ".bench",
    "robustness": ".robustness",
}


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in df.columns if not any(w in c.lower() for w in TIMING_WORDS) and c != "path"]
    keys = [
        c
        for c in ("model_id", "variant", "runtime", "threads", "image", "condition", "severity")
        if c in keep
    ]
    return df[keep].sort_values(keys).reset_index(drop=True)


def test_smoke_study_writes_every_output(smoke_run):
    for name in CSVS + ["config.toml", "machine.json", "dataset.json", "report/index.html"]:
        assert (smoke_run / name).exists(), name
    trained = pd.read_csv(smoke_run / "trained_models_info.csv")
    assert len(trained) == 2  # filters {4} x batch norm {on, off} x epochs {3}
    compressed = pd.read_csv(smoke_run / "compressed_models_info.csv")
    assert len(compressed) == 2 * 6
    assert set(compressed["variant"]) >= {"tflite-int8", "tflite-fp16", "tflite-int16x8"}
    average = pd.read_csv(smoke_run / "model_performance_average_results.csv")
    for col in (
        "Model",
        "Quantization",
        "Execution_time",
        "Memory_usage",
        "IoU_score",
        "Dice_score",
        "latency_ms_median",
        "fg_iou",
        "size_bytes",
    ):
        assert col in average, col
    assert "openvino" in set(average["runtime"])
    for model_id in trained["model_id"]:
        assert (smoke_run / "models" / model_id / "model.keras").exists()
        assert (smoke_run / "models" / model_id / "history.csv").exists()
    html = (smoke_run / "report" / "index.html").read_text()
    assert "SYNTHETIC" in html


def test_rerun_of_a_finished_study_recomputes_nothing(smoke_run, cache_env):
    before = {
        p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.suffix in (".keras", ".tflite")
    }
    started = time.perf_counter()
    run_cli(["study", "--preset", "smoke", "--out", smoke_run], env=cache_env)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after
    assert time.perf_counter() - started < 120


def test_study_killed_at_a_random_stage_resumes_to_the_same_csvs(
    smoke_run,
    cache_env,
    tmp_path,
):
    stage = random.Random(os.getpid()).choice(list(STAGE_MARKERS))
    print(f"killing the study once it enters stage '{stage}'")
    out = tmp_path / "smoke"
    proc = subprocess.Popen(
        [sys.executable, "-m", "unetq.cli", "study", "--preset", "smoke", "--out", str(out)],
        env=cache_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob(STAGE_MARKERS[stage])):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"study ended before stage {stage}: {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "report" / "index.html").exists()

    run_cli(["study", "--preset", "smoke", "--out", out], env=cache_env)
    for name in CSVS:
        expected = _comparable(pd.read_csv(smoke_run / name))
        got = _comparable(pd.read_csv(out / name))
        assert list(got.columns) == list(expected.columns), name
        for col in expected.columns:
            if pd.api.types.is_numeric_dtype(expected[col]):
                np.testing.assert_allclose(
                    got[col], expected[col], rtol=1e-5, atol=1e-6, err_msg=f"{name}:{col}"
                )
            else:
                assert got[col].tolist() == expected[col].tolist(), f"{name}:{col}"
