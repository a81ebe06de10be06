"""Cross-dataset evaluation: a run's models on every image of another dataset, and split 'all'."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import unetq.runtimes
from tinyrun import COMPRESSED, MODELS, SIZE, VARIANTS, copy_run, tiny_config
from unetq.cli import app
from unetq.config import DataConfig, StudyConfig
from unetq.data import load_split, open_dataset, scan_dataset, write_synthetic
from unetq.errors import ConfigError, DataError
from unetq.evaluate import (
    cross_data_config,
    cross_name,
    evaluate_cross,
    is_cross,
)
from unetq.report import build_report
from unetq.report.tables import main_table
from unetq.runfolder import RunFolder
from unetq.variants import VARIANTS as REGISTRY

OTHER_IMAGES = 6
PAIRS = [(COMPRESSED, v, REGISTRY[v].runtime) for v in VARIANTS] + [
    (m, "keras", "keras") for m in MODELS if m != COMPRESSED
]


@pytest.fixture
def other(tmp_path):
    """Another dataset with the run's classes (3, background 0), larger images, folder layout."""
    return write_synthetic(tmp_path / "other-shapes", count=OTHER_IMAGES, size=40, seed=7)


def binary_folder(root, n=3):
    """A folder dataset with 0/255 masks: 2 classes."""
    rng = np.random.default_rng(1)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            root / "images" / f"b{i}.png"
        )
        mask = np.zeros((20, 20), np.uint8)
        mask[5:12, 4:15] = 255
        Image.fromarray(mask).save(root / "masks" / f"b{i}.png")
    return root


def _cross_cfg(other_dir):
    cfg = tiny_config()
    cfg.data = cross_data_config(cfg.data, other_dir, None)
    return cfg


# --- split 'all' -----------------------------------------------------------------------------


def test_split_all_is_every_pair_in_name_order(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETQ_CACHE_DIR", str(tmp_path / "cache"))
    root = write_synthetic(tmp_path / "data", count=10, size=16, seed=3)
    index = scan_dataset(root, "folder", DataConfig(limit=4))
    names = sorted(p.name for p in index.pairs)
    assert [p.name for p in index.split_pairs("all")] == names
    assert sum(len(v) for v in index.splits.values()) == 4  # 'all' ignores data.limit
    arrays = load_split(index, "all", 16)
    assert arrays.names == names and arrays.images.shape == (10, 16, 16, 3)
    test = load_split(index, "test", 16)
    i = names.index(test.names[0])
    np.testing.assert_array_equal(arrays.masks[i], test.masks[0])
    with pytest.raises(DataError, match="choose train, val, test or all"):
        index.split_pairs("every")


# --- which mode, which name ------------------------------------------------------------------


def test_cross_mode_and_name(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    data = DataConfig()
    assert not is_cross(run, data, tmp_path / "x", None)  # run's dataset unknown
    assert is_cross(run, data, None, "mine")
    run.dataset.write_text(json.dumps({"root": str(tmp_path / "pets")}))
    assert not is_cross(run, data, tmp_path / "pets", None)
    assert not is_cross(run, data, tmp_path / "x" / ".." / "pets", None)
    assert is_cross(run, data, tmp_path / "other", None)
    assert not is_cross(run, data, None, None)
    assert cross_name(None, tmp_path / "isbi2012-membrane") == "isbi2012-membrane"
    assert cross_name("dsb", tmp_path / "x") == "dsb"
    for bad in ("../up", "a/b", ".hidden", ""):
        with pytest.raises(ConfigError):
            cross_name(bad, None)
    with pytest.raises(DataError, match="data folder not found"):
        cross_data_config(data, tmp_path / "missing", None)
    synthetic = DataConfig(source="synthetic", image_size=32)
    moved = cross_data_config(synthetic, write_synthetic(tmp_path / "f", 3, 16, 0), None)
    assert (moved.source, moved.format, moved.image_size) == ("auto", "folder", 32)


# --- evaluate_cross --------------------------------------------------------------------------


def test_evaluate_cross_writes_results_report_and_resumes(tiny, other, tmp_path, monkeypatch):
    run_dir = copy_run(tiny, tmp_path / "run")
    cfg = _cross_cfg(other)
    index = open_dataset(cfg.data)
    path = evaluate_cross(run_dir, index, "shapes", cfg)
    out = run_dir / "cross" / "shapes"
    assert path == out / "model_performance_individual_results.csv"
    assert not (run_dir / "model_performance_individual_results.csv").exists()

    df = pd.read_csv(path, dtype={"image": str})
    assert len(df) == len(PAIRS) * OTHER_IMAGES and set(df.split) == {"all"}
    names = sorted(p.name for p in index.pairs)
    for key, group in df.groupby(["model_id", "variant", "runtime"]):
        assert key in PAIRS and list(group.image) == names
    assert (df[df.variant == "keras"].agreement == 1.0).all()
    assert {"Model", "Epoch", "Filters", "Quantization", "IoU_score", "cm_2_2"} <= set(df.columns)

    avg = pd.read_csv(out / "model_performance_average_results.csv")
    assert sorted(zip(avg.model_id, avg.variant, avg.runtime, strict=True)) == sorted(PAIRS)
    assert list(avg.columns[:7]) == [
        "Model",
        "Epoch",
        "Filters",
        "Normalization",
        "Quantization",
        "IoU_score",
        "Dice_score",
    ]
    assert (avg.n_images == OTHER_IMAGES).all() and set(avg.dataset) == {"shapes"}
    assert not [c for c in avg.columns if "latency" in c or "threads" in c]
    means = df.groupby(["model_id", "variant", "runtime"]).fg_iou.mean()
    for row in avg.itertuples():
        assert row.fg_iou == pytest.approx(means[(row.model_id, row.variant, row.runtime)])
        assert row.IoU_score == row.fg_iou and row.Epoch == 2
    fp32 = avg[avg.variant == "tflite-fp32"].iloc[0]
    tflite = run_dir / "models" / COMPRESSED / "tflite-fp32.tflite"
    assert fp32.size_bytes == tflite.stat().st_size

    info = json.loads((out / "dataset.json").read_text())
    assert info["root"] == str(other) and info["images"] == OTHER_IMAGES
    assert (info["num_classes"], info["background_class"], info["split"]) == (3, 0, "all")
    assert info["run_dataset"] == json.loads((run_dir / "dataset.json").read_text())["root"]

    table = main_table(avg)  # the report's table of accuracy-only rows: no latency columns
    assert len(table) == len(PAIRS) and not [c for c in table.columns if c.startswith("ms_")]
    assert table.fg_iou.notna().all() and table.size_mb.notna().all()
    page = build_report(run_dir).read_text()
    assert "Cross-dataset: shapes" in page and str(other) in page

    # rerun: every part is finished, nothing is loaded; a lost part is redone alone
    stamps = {p: p.stat().st_mtime_ns for p in (out / ".eval").rglob("*.csv")}
    calls = []
    real = unetq.runtimes.load_segmenter

    def counting(runtime, artifact, *args, **kwargs):
        calls.append((artifact.parent.name, artifact.stem, runtime))
        return real(runtime, artifact, *args, **kwargs)

    monkeypatch.setattr("unetq.evaluate.load_segmenter", counting)
    evaluate_cross(run_dir, index, "shapes", cfg)
    assert calls == [] and stamps == {p: p.stat().st_mtime_ns for p in stamps}
    lost = out / ".eval" / COMPRESSED / "tflite-int8.csv"
    lost.unlink()
    again = evaluate_cross(run_dir, index, "shapes", cfg)
    assert calls == [(COMPRESSED, "tflite-int8", "litert")]
    pd.testing.assert_frame_equal(pd.read_csv(again, dtype={"image": str}), df)

    # another dataset under the same name is refused rather than mixed in
    elsewhere = write_synthetic(tmp_path / "elsewhere", count=4, size=24, seed=9)
    cfg2 = _cross_cfg(elsewhere)
    with pytest.raises(ConfigError, match="holds results for another dataset"):
        evaluate_cross(run_dir, open_dataset(cfg2.data), "shapes", cfg2)


def test_incompatible_classes_is_a_data_error(tiny, tmp_path):
    other = binary_folder(tmp_path / "binary")
    cfg = _cross_cfg(other)
    with pytest.raises(DataError, match="has 2 classes with background class 0 but the run's"):
        evaluate_cross(copy_run(tiny, tmp_path / "run"), open_dataset(cfg.data), "b", cfg)
    assert not (tmp_path / "run" / "cross").exists()


# --- CLI -------------------------------------------------------------------------------------


@pytest.mark.slow  # the CLI over what test_evaluate_cross_writes_results_report_and_resumes checks
def test_cli_evaluate_cross_and_own_dataset(tiny, other, tmp_path):
    run_dir = copy_run(tiny, tmp_path / "run")
    # the wiring is under test here, not keras: keep one model (a model is listed by its
    # model.keras, so its keras variant stays)
    shutil.rmtree(run_dir / "models" / "xception-f8-bn-e2")
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--run", str(run_dir), "--data-dir", str(other)])
    assert result.exit_code == 0, result.output
    assert "dataset 'other-shapes' (every image)" in result.output
    out = run_dir / "cross" / "other-shapes"
    avg = pd.read_csv(out / "model_performance_average_results.csv")
    assert sorted(avg.variant) == ["keras", "openvino-fp32", "tflite-fp32", "tflite-int8"]
    assert (avg.n_images == OTHER_IMAGES).all()
    # the run's own dataset folder is not cross mode: its test split, the run's CSVs
    own = json.loads((run_dir / "dataset.json").read_text())["root"]
    result = runner.invoke(app, ["evaluate", "--run", str(run_dir), "--data-dir", own])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(run_dir / "model_performance_individual_results.csv")
    assert set(df.split) == {"test"} and len(df) == 4 * 4
    assert sorted(p.name for p in (run_dir / "cross").iterdir()) == ["other-shapes"]


@pytest.mark.slow  # the CLI over test_incompatible_classes_is_a_data_error
def test_cli_incompatible_classes_exits_2_with_one_line(tiny, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = StudyConfig.model_validate({"data": {"image_size": SIZE}})
    (run_dir / "config.toml").write_text(f"[data]\nimage_size = {cfg.data.image_size}\n")
    shutil.copy(tiny.run_dir / "dataset.json", run_dir / "dataset.json")
    other = binary_folder(tmp_path / "binary")
    env = dict(os.environ, UNETQ_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="300")
    proc = subprocess.run(
        [sys.executable, "-m", "unetq.cli", "evaluate", "--run", str(run_dir)]
        + ["--data-dir", str(other), "--name", "bin"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"error: {other} has 2 classes with background class 0")
    assert "has 3 with background class 0" in lines[0]
