"""Training: one run per horizon set, best checkpoints, resume after SIGKILL / Ctrl-C, skipping,
collapse detection, validation metrics. Most tests register a tiny two-layer 'tiny' architecture
so that TF's graph tracing (about 15 s for the xception U-Net) is paid once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unetq import models, train
from unetq.config import StudyConfig, TrainConfig
from unetq.data import SplitArrays
from unetq.errors import ConfigError
from unetq.records import ModelSpec
from unetq.runfolder import RunFolder
from unetq.train import (
    epoch_batches,
    evaluate_split,
    foreground_iou,
    is_collapsed,
    train_grid,
    train_run,
)

SIZE = 32


def make_split(n: int, seed: int, size: int = SIZE) -> SplitArrays:
    """Dark noisy images with one bright square each; the square is class 1, the rest class 0."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        top, left = rng.integers(1, size // 2, 2)
        side = int(rng.integers(size // 5, size // 2))
        images[i, top : top + side, left : left + side] = 200
        masks[i, top : top + side, left : left + side] = 1
    return SplitArrays([f"s{seed}_{i}" for i in range(n)], images, masks)


def tiny_builder(filters, batchnorm, num_classes, input_size, bn_momentum=0.99, batch_size=None):
    import keras

    inputs = keras.Input((input_size, input_size, 3), batch_size=batch_size)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization(momentum=bn_momentum)(x)
    outputs = keras.layers.Conv2D(num_classes, 1, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def tiny_specs(epochs, arch="tiny", filters=4, batchnorm=True, num_classes=2):
    return [ModelSpec(arch, filters, batchnorm, e, SIZE, num_classes) for e in epochs]


def tiny_cfg(**overrides) -> TrainConfig:
    values = dict(batch_size=8, learning_rate=1e-2, bn_momentum=0.9, seed=7)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture
def tiny_arch(monkeypatch):
    monkeypatch.setitem(models.BUILDERS, "tiny", tiny_builder)


def read_history(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


# --------------------------------------------------------------------------- pure functions


def test_foreground_iou_by_hand():
    # pets convention: class 1 is background; classes 0 (pet) and 2 (border) are foreground
    cm = np.array([[5, 1, 2], [3, 10, 0], [1, 4, 6]])  # rows truth, columns prediction
    tp = 5 + 2 + 1 + 6  # truth fg and predicted fg (pet/border confusion does not count)
    fp = 3 + 0  # truth background predicted fg
    fn = 1 + 4  # truth fg predicted background
    assert foreground_iou(cm, background_class=1) == pytest.approx(tp / (tp + fp + fn))
    assert foreground_iou(np.array([[7, 0], [0, 0]]), 0) == 1.0  # no foreground: exactly right


def test_collapse_rule():
    assert is_collapsed(np.array([[0, 60], [0, 40]]))  # predicts class 1 everywhere
    assert not is_collapsed(np.array([[55, 5], [5, 35]]))
    assert not is_collapsed(np.array([[0, 0], [0, 100]]))  # truth is one class too
    assert is_collapsed(np.array([[1, 599], [0, 400]]))  # 99.9% of pixels in one class


def test_epoch_batches_are_seeded_and_flip_image_and_mask_together():
    arrays = make_split(10, 0)
    first = list(epoch_batches(arrays, 4, (7, 1), augment=True))
    again = list(epoch_batches(arrays, 4, (7, 1), augment=True))
    other = list(epoch_batches(arrays, 4, (7, 2), augment=True))
    assert [b[0].shape[0] for b in first] == [4, 4, 2]
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other, strict=True))
    x = np.concatenate([b[0] for b in first])
    y = np.concatenate([b[1] for b in first])
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.min() >= 0 and x.max() <= 1
    flipped = 0
    for xi, yi in zip(x, y, strict=True):
        match = [i for i in range(10) if np.array_equal(yi, arrays.masks[i])]
        mirror = [i for i in range(10) if np.array_equal(yi, arrays.masks[i][:, ::-1])]
        if match and np.allclose(xi, arrays.images[match[0]] / 255):
            continue
        assert mirror, "a mask is neither an original nor a mirrored one"
        np.testing.assert_allclose(xi, arrays.images[mirror[0]][:, ::-1] / 255, atol=1e-6)
        flipped += 1
    assert 0 < flipped < 10


def test_validation_loss_matches_keras_evaluate():
    val = make_split(6, 3)
    model = tiny_builder(4, True, 3, SIZE)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss, confusion = evaluate_split(model, val, 4, 3)
    keras_loss = model.evaluate(val.images / np.float32(255), val.masks, batch_size=4, verbose=0)
    assert loss == pytest.approx(keras_loss, rel=1e-4)
    assert confusion.sum() == val.masks.size


# --------------------------------------------------------------------------- training runs


def run_horizons(arch: str, run_dir: Path):
    train_data, val_data = make_split(16, 1), make_split(8, 2)
    cfg = tiny_cfg(learning_rate=1e-3 if arch == "xception" else 1e-2)
    specs = tiny_specs([1, 2], arch=arch)
    records = train_run(specs, train_data, val_data, cfg, run_dir, background_class=0)
    return specs, records, RunFolder(run_dir), (train_data, val_data, cfg)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the tiny architecture with horizons 1 and 2 on 32 px shapes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(models.BUILDERS, "tiny", tiny_builder)
        yield run_horizons("tiny", tmp_path_factory.mktemp("run"))


def check_horizons(arch: str, run) -> None:
    import keras

    specs, records, folder, (_, val_data, cfg) = run
    ids = [f"{arch}-f4-bn-e1", f"{arch}-f4-bn-e2"]
    assert [r.model_id for r in records] == ids
    assert folder.model_ids() == ids
    h1 = read_history(folder.history(ids[0]))
    h2 = read_history(folder.history(ids[1]))
    assert list(h2.columns) == ["epoch", "loss", "val_loss", "val_fg_iou", "seconds"]
    assert h1["epoch"].tolist() == [1] and h2["epoch"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(h1, h2.iloc[:1])  # the same run, not two runs
    params = models.count_params(models.build_model(arch, 4, True, 2, SIZE))
    for record, history in zip(records, (h1, h2), strict=True):
        assert folder.done_marker(record.model_id).is_file()
        assert record.model_path == f"models/{record.model_id}/model.keras"
        assert folder.root / record.model_path == folder.model_file(record.model_id)
        best = history.loc[history["val_loss"].idxmin()]
        assert record.best_epoch == best["epoch"]
        assert record.best_val_loss == pytest.approx(best["val_loss"])
        assert record.final_val_loss == pytest.approx(history["val_loss"].iloc[-1])
        assert record.val_fg_iou == pytest.approx(best["val_fg_iou"])
        assert record.epochs_run == record.epochs
        assert record.params == params
        assert record.peak_rss_mb > 100 and record.wall_time_s >= history["seconds"].sum()
        # model.keras is the best checkpoint: re-evaluating it gives the best validation loss
        saved = keras.models.load_model(folder.model_file(record.model_id))
        loss, _ = evaluate_split(saved, val_data, cfg.batch_size, 2)
        assert loss == pytest.approx(record.best_val_loss, rel=1e-4)
    assert records[1].wall_time_s > records[0].wall_time_s
    state_files = sorted(p.name for p in folder.train_state(f"{arch}-f4-bn").iterdir())
    assert state_files == [
        f"best-e{records[1].best_epoch}.weights.npz",
        "state-e2.keras",
        "state.json",
    ]


def test_one_run_serves_every_horizon(tiny_run):
    check_horizons("tiny", tiny_run)


@pytest.mark.slow
def test_xception_run_serves_every_horizon(tmp_path):
    check_horizons("xception", run_horizons("xception", tmp_path / "run"))


def test_rerun_skips_finished_models(tiny_run, monkeypatch):
    specs, records, folder, (train_data, val_data, cfg) = tiny_run
    files = [f(r.model_id) for r in records for f in (folder.model_file, folder.history)]
    before = {p: p.stat().st_mtime_ns for p in files}

    def no_building(*args, **kwargs):
        raise AssertionError("a finished run must not build or train a model")

    monkeypatch.setattr(train, "build_model", no_building)
    again = train_run(specs, train_data, val_data, cfg, folder.root, background_class=0)
    assert again == records
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_changed_settings_are_refused_for_finished_models(tiny_run):
    specs, _, folder, (train_data, val_data, cfg) = tiny_run
    changed = cfg.model_copy(update={"learning_rate": 0.5})
    with pytest.raises(ConfigError, match="trained with different settings.*learning_rate"):
        train_run(specs, train_data, val_data, changed, folder.root, background_class=0)


def test_collapsed_model_is_flagged(tiny_arch, monkeypatch, tmp_path, capsys):
    def collapsing(*args, **kwargs):
        model = tiny_builder(*args, **kwargs)
        kernel, bias = model.layers[-1].get_weights()
        model.layers[-1].set_weights([np.zeros_like(kernel), np.array([30.0, 0.0])])
        return model

    monkeypatch.setitem(models.BUILDERS, "tiny", collapsing)
    cfg = tiny_cfg(optimizer="sgd", learning_rate=1e-9, bn_momentum=0.99)
    [record] = train_run(
        tiny_specs([1]), make_split(8, 1), make_split(8, 2), cfg, tmp_path, background_class=0
    )
    assert record.collapsed
    assert record.val_max_class_share == 1.0
    assert record.val_fg_iou == 0.0
    err = " ".join(capsys.readouterr().err.split())
    assert "tiny-f4-bn-e1 collapsed" in err and "bn_momentum" in err


def test_ctrl_c_then_rerun_resumes_after_the_last_epoch(tiny_arch, monkeypatch, tmp_path):
    train_data, val_data, cfg = make_split(16, 1), make_split(8, 2), tiny_cfg()
    calls = {"n": 0}
    real = train.evaluate_split

    def interrupt_in_epoch_3(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train, "evaluate_split", interrupt_in_epoch_3)
    specs = tiny_specs([2, 4])
    folder = RunFolder(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_run(specs, train_data, val_data, cfg, tmp_path, background_class=0)
    state = json.loads((folder.train_state("tiny-f4-bn") / "state.json").read_text())
    assert state["epoch"] == 2
    assert folder.done_marker("tiny-f4-bn-e2").exists()
    assert not folder.model_dir("tiny-f4-bn-e4").exists()

    monkeypatch.setattr(train, "evaluate_split", real)
    records = train_run(specs, train_data, val_data, cfg, tmp_path, background_class=0)
    history = read_history(folder.history("tiny-f4-bn-e4"))
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert [r.epochs_run for r in records] == [2, 4]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_with_optimizer_state(tmp_path, monkeypatch):
    """Kill a training process right after an epoch's state is saved; the rerun continues from
    the saved epoch with the optimizer state restored, and matches an uninterrupted run."""
    import keras

    monkeypatch.setitem(models.BUILDERS, "tiny", tiny_builder)
    horizons, n_train, batch = [2, 10], 16, 4
    script = tmp_path / "train_tiny.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_train import make_split, tiny_builder, tiny_cfg, tiny_specs
            from unetq import models
            from unetq.train import train_run
            models.BUILDERS["tiny"] = tiny_builder
            train_run(tiny_specs({horizons}), make_split({n_train}, 1), make_split(8, 2),
                      tiny_cfg(batch_size={batch}), Path(sys.argv[1]), background_class=0)
            """
        )
    )
    killed = tmp_path / "killed"
    state_json = RunFolder(killed).train_state("tiny-f4-bn") / "state.json"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        deadline = time.monotonic() + 120
        while not state_json.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = json.loads(state_json.read_text())
    done_epochs = before["epoch"]
    assert 1 <= done_epochs < horizons[-1], "the process was not killed mid-run"

    cfg = tiny_cfg(batch_size=batch)
    train_data, val_data = make_split(n_train, 1), make_split(8, 2)
    records = train_run(tiny_specs(horizons), train_data, val_data, cfg, killed, background_class=0)
    history = read_history(RunFolder(killed).history("tiny-f4-bn-e10"))
    assert history["epoch"].tolist() == list(range(1, 11))  # every epoch exactly once
    # epochs finished before the kill were not redone
    kept = pd.DataFrame(before["history"])[["epoch", "seconds"]]
    pd.testing.assert_frame_equal(history[["epoch", "seconds"]].iloc[:done_epochs], kept)
    # the optimizer continued counting: its state was restored, not restarted
    final_state = json.loads(state_json.read_text())
    resumed = keras.models.load_model(state_json.parent / final_state["state_file"])
    assert int(resumed.optimizer.iterations.numpy()) == 10 * (n_train // batch)
    assert records[1].wall_time_s >= history["seconds"].sum()

    # same seed, same data order: the resumed run follows an uninterrupted one
    straight = tmp_path / "straight"
    train_run(tiny_specs(horizons), train_data, val_data, cfg, straight, background_class=0)
    reference = read_history(RunFolder(straight).history("tiny-f4-bn-e10"))
    np.testing.assert_allclose(history["loss"], reference["loss"], rtol=1e-4)
    np.testing.assert_allclose(history["val_loss"], reference["val_loss"], rtol=1e-4)


def test_train_grid_writes_trained_models_info(tiny_arch, tmp_path):
    cfg = StudyConfig.model_validate(
        {
            "data": {"image_size": SIZE, "source": "synthetic"},
            "train": {
                "arch": ["tiny"],
                "filters": [2],
                "batchnorm": [True, False],
                "epochs": [2, 1],
                "batch_size": 8,
                "learning_rate": 1e-2,
            },
        }
    )
    records = train_grid(cfg, make_split(16, 1), make_split(8, 2), tmp_path)
    table = pd.read_csv(RunFolder(tmp_path).trained_csv, keep_default_na=False)
    assert table["Model"].tolist() == [
        "tiny-f2-bn-e1",
        "tiny-f2-bn-e2",
        "tiny-f2-nobn-e1",
        "tiny-f2-nobn-e2",
    ]
    assert table["Epoch"].tolist() == [1, 2, 1, 2]
    assert table["Normalization"].tolist() == [
        "BatchNorm",
        "BatchNorm",
        "NoBatchNorm",
        "NoBatchNorm",
    ]
    assert table["model_id"].tolist() == table["Model"].tolist()
    assert {"params", "gmacs", "best_epoch", "val_fg_iou", "collapsed", "peak_rss_mb"} <= set(
        table.columns
    )
    assert [r.model_id for r in records] == table["Model"].tolist()
    assert RunFolder(tmp_path).model_file("tiny-f2-nobn-e2").stat().st_size > 0


def test_cli_train_on_synthetic_data(tiny_arch, tmp_path, monkeypatch, capsys):
    from unetq import cli

    monkeypatch.setenv("UNETQ_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--out", str(out)]
    overrides = ('train.arch=["tiny"]', "train.filters=[2]", "train.batchnorm=[false]")
    for override in (*overrides, "train.epochs=[1, 2]"):
        args += ["--set", override]
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 0
    table = pd.read_csv(RunFolder(out).trained_csv)
    assert table["Model"].tolist() == ["tiny-f2-nobn-e1", "tiny-f2-nobn-e2"]
    assert (out / "config.toml").exists()
    assert "SYNTHETIC DATA" in capsys.readouterr().out
