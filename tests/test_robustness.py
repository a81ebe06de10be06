"""robustness: a row per (model, variant, condition, severity), changes, resume, CLI."""

from __future__ import annotations

import itertools
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import unetq.runtimes
from tinyrun import COMPRESSED, MODELS, TEST_IMAGES, copy_run, tiny_config, tiny_run
from tinyrun import ROBUSTNESS_VARIANTS as VARIANTS
from unetq.cli import app
from unetq.data import open_dataset
from unetq.errors import ConfigError
from unetq.robustness import choose_models, robustness_run
from unetq.runfolder import RunFolder

CONDITIONS = ["gaussian_noise", "occlusion"]
SEVERITIES = [1, 2]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A copy of the tiny run with its robustness step done (shared: copy before changing)."""
    built = tiny_run(tmp_path_factory)
    run_dir = copy_run(built, tmp_path_factory.mktemp("robust") / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNETQ_CACHE_DIR", str(built.cache_dir))
        mp.delenv("UNETQ_DATA_DIR", raising=False)
        _run(run_dir)
    return run_dir


@pytest.fixture
def loads(monkeypatch):
    """Counts predictor loads as (model_id, variant file stem)."""
    calls = []
    real = unetq.runtimes.load_segmenter

    def counting(runtime, artifact, *args, **kwargs):
        calls.append((artifact.parent.name, artifact.stem))
        return real(runtime, artifact, *args, **kwargs)

    monkeypatch.setattr("unetq.robustness.load_segmenter", counting)
    return calls


def _run(run_dir, cfg=None):
    cfg = cfg or tiny_config()
    return robustness_run(run_dir, open_dataset(cfg.data), cfg)


def _mtimes(run_dir):
    return {p.name: p.stat().st_mtime_ns for p in RunFolder(run_dir).robustness_parts()}


def test_rows_changes_and_agreement(finished):
    df = pd.read_csv(finished / "robustness.csv")
    pairs = [(COMPRESSED, v) for v in VARIANTS] + [(m, "keras") for m in MODELS if m != COMPRESSED]
    jobs = [("clean", 0)] + list(itertools.product(CONDITIONS, SEVERITIES))
    expected = {(m, v, c, s) for (m, v), (c, s) in itertools.product(pairs, jobs)}
    got = list(zip(df.model_id, df.variant, df.condition, df.severity, strict=True))
    assert len(got) == len(expected) == 4 * 5 and set(got) == expected
    assert (df.n_images == TEST_IMAGES).all()
    assert "images_key" not in df.columns and "artifact_sha256" not in df.columns
    clean = df[df.condition == "clean"].set_index(["model_id", "variant"])
    for metric in ("fg_iou", "fg_dice", "miou"):
        base = [clean.loc[(m, v), metric] for m, v in zip(df.model_id, df.variant, strict=True)]
        np.testing.assert_allclose(df[f"{metric}_change"], df[metric] - np.array(base))
        assert df[metric].between(0, 1).all()
    assert (df.loc[df.condition == "clean", "fg_iou_change"] == 0).all()
    keras = df[df.variant == "keras"]
    assert (keras.agreement == 1.0).all()  # the reference agrees with itself
    assert df.agreement.between(0, 1).all()


def test_rerun_skips_finished_parts_and_redoes_a_deleted_one(tiny, finished, tmp_path, loads):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    run = RunFolder(run_dir)
    # artifacts newer than the parts (a touched or copied folder): same content, still finished
    for model_id in MODELS:
        for variant in VARIANTS:
            artifact = run.artifact(model_id, variant)
            if artifact.exists():
                later = artifact.stat().st_mtime + 10
                os.utime(artifact, (later, later))
    first = pd.read_csv(run_dir / "robustness.csv")
    before = _mtimes(run_dir)
    assert sorted(before) == [
        "clean-0.csv",
        "gaussian_noise-1.csv",
        "gaussian_noise-2.csv",
        "occlusion-1.csv",
        "occlusion-2.csv",
    ]
    loads.clear()
    again = pd.read_csv(_run(run_dir))
    assert loads == [] and _mtimes(run_dir) == before
    pd.testing.assert_frame_equal(again, first)

    run.robustness_part("occlusion", 2).unlink()
    redone = pd.read_csv(_run(run_dir))
    after = _mtimes(run_dir)
    assert {k for k in after if after[k] != before.get(k)} == {"occlusion-2.csv"}
    assert len(loads) == 4  # each (model, variant) loaded once, whatever the number of parts
    pd.testing.assert_frame_equal(redone, first, check_exact=False, atol=1e-6)

    # other images (max_images) make every part stale
    loads.clear()
    cfg = tiny_config()
    cfg.robustness.max_images = 3
    fewer = pd.read_csv(_run(run_dir, cfg))
    assert (fewer.n_images == 3).all() and len(fewer) == len(first)
    assert all(after[k] != v for k, v in _mtimes(run_dir).items())

    # an artifact with new content (re-exported) makes every part that used it stale
    loads.clear()
    times = _mtimes(run_dir)
    fp32 = run.artifact(COMPRESSED, "tflite-fp32")
    fp32.write_bytes(run.artifact(COMPRESSED, "tflite-int8").read_bytes())
    _run(run_dir, cfg)
    assert all(times[k] != v for k, v in _mtimes(run_dir).items())
    assert (COMPRESSED, "tflite-fp32") in loads


def test_choose_models_one_per_filter_width(tmp_path):
    for model_id in [
        "xception-f4-bn-e2",
        "xception-f4-nobn-e2",
        "xception-f4-bn-e1",
        "xception-f8-bn-e2",
        "xception-f8-nobn-e3",
        "xception-f16-nobn-e5",
        "xception-f16-bn-e5",
    ]:
        (tmp_path / "models" / model_id).mkdir(parents=True)
        (tmp_path / "models" / model_id / "model.keras").write_bytes(b"x")
    (tmp_path / "models" / "xception-f32-bn-e9").mkdir()  # never trained: no model.keras
    assert choose_models(tmp_path, None) == [
        "xception-f4-bn-e2",  # longest-trained, batch norm first
        "xception-f8-nobn-e3",  # longest-trained beats batch norm
        "xception-f16-bn-e5",
    ]
    assert choose_models(tmp_path, ["xception-f8-bn-e2"]) == ["xception-f8-bn-e2"]
    with pytest.raises(ConfigError, match="xception-f32-bn-e9"):
        choose_models(tmp_path, ["xception-f32-bn-e9"])
    assert choose_models(tmp_path / "empty", None) == []
    (tmp_path / "models" / "my_unet").mkdir()  # a user's own model (unetq benchmark)
    (tmp_path / "models" / "my_unet" / "model.onnx").write_bytes(b"x")
    assert choose_models(tmp_path, None)[-1] == "my_unet"


def test_unknown_condition_or_variant_is_a_config_error(tiny, tmp_path, loads):
    run_dir = copy_run(tiny, tmp_path / "run")
    cfg = tiny_config()
    cfg.robustness.conditions = ["gaussian_noise", "fog"]
    with pytest.raises(ConfigError, match="unknown condition.*fog"):
        _run(run_dir, cfg)
    cfg = tiny_config()
    cfg.robustness.variants = ["keras", "tflite-int3"]
    with pytest.raises(ConfigError, match="tflite-int3"):
        _run(run_dir, cfg)
    assert loads == [] and not RunFolder(run_dir).robustness_part("clean", 0).parent.exists()


def test_cli_robustness(tiny, tmp_path):
    run_dir = copy_run(tiny, tmp_path / "run")
    args = ["robustness", "--run", str(run_dir), "--set", "robustness.conditions=['occlusion']"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "robustness.csv" in result.output
    df = pd.read_csv(run_dir / "robustness.csv")
    assert set(df.condition) == {"clean", "occlusion"} and len(df) == 4 * 3
