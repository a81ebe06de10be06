"""evaluate: per-image scoring, summaries, and the resumable run over fake models and runtimes."""

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from unetq.config import StudyConfig
from unetq.errors import ModelError
from unetq.evaluate import evaluate_predictor, evaluate_run
from unetq.metrics import agreement
from unetq.results import model_factors, result_rows, summarize
from unetq.runfolder import artifact_path

S = 16  # image size (the config's minimum)


def split_arrays(masks):
    """Images whose first pixel holds the image index, so fakes know which image they see."""
    n = len(masks)
    images = np.zeros((n, *masks.shape[1:], 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return SimpleNamespace(names=[f"img_{i}" for i in range(n)], images=images, masks=masks)


class MapPredictor:
    """Returns preset class maps chosen by the index stored in the image."""

    def __init__(self, maps, runtime="litert", hw=None, num_classes=3):
        self.maps = np.asarray(maps, np.uint8)
        self.runtime = runtime
        self.input_hw = hw or self.maps.shape[1:]
        self.num_classes = num_classes
        self.batches = []

    def predict(self, images):
        self.batches.append(len(images))
        return self.maps[images[:, 0, 0, 0]]


def hand_case():
    """Image A: all background, predicted so. Image B: 4 pet pixels, 2 of them found."""
    truth = np.ones((2, 4, 4), np.uint8)
    truth[1, :2, :2] = 0
    pred = np.ones((2, 4, 4), np.uint8)
    pred[1, 0, :2] = 0
    return split_arrays(truth), pred


def run(predictor, arrays, **kw):
    args = dict(model_id="m", variant="tflite-int8", split="test", background_class=1)
    args.update(num_classes=3)
    args.update(kw)
    return evaluate_predictor(predictor, arrays, **args)


def test_evaluate_predictor_scores_each_image():
    arrays, pred = hand_case()
    results = run(MapPredictor(pred), arrays)
    assert [r.image for r in results] == ["img_0", "img_1"]
    a, b = results
    assert (a.fg_iou, a.fg_dice, a.miou, a.pixel_acc) == (1.0, 1.0, 1.0, 1.0)
    assert b.fg_iou == pytest.approx(0.5) and b.fg_dice == pytest.approx(2 / 3)
    assert b.miou == pytest.approx((2 / 4 + 12 / 14) / 2)
    assert b.confusion == [2, 2, 0, 0, 12, 0, 0, 0, 0]
    assert b.runtime == "litert" and b.split == "test" and b.background_class == 1
    assert np.isnan(a.agreement)  # no keras reference for a compressed variant


def test_agreement_with_reference_and_for_keras_itself():
    arrays, pred = hand_case()
    ref = {"img_0": pred[0], "img_1": arrays.masks[1]}
    results = run(MapPredictor(pred), arrays, reference=ref)
    assert results[0].agreement == 1.0
    assert results[1].agreement == pytest.approx(agreement(pred[1], arrays.masks[1]))
    keras = run(MapPredictor(pred, runtime="keras"), arrays, variant="keras")
    assert [r.agreement for r in keras] == [1.0, 1.0]


def test_max_images_and_predictions_out():
    masks = np.ones((20, 4, 4), np.uint8)
    arrays = split_arrays(masks)
    predictor = MapPredictor(masks)
    out = {}
    results = run(predictor, arrays, max_images=11, predictions_out=out)
    assert len(results) == 11 and sorted(out) == sorted(arrays.names[:11])
    assert sum(predictor.batches) == 11  # only the images asked for are predicted


def test_incompatible_predictor_is_a_one_line_model_error():
    arrays, pred = hand_case()
    with pytest.raises(ModelError, match="expects 8x8 images"):
        run(MapPredictor(pred, hw=(8, 8)), arrays)
    with pytest.raises(ModelError, match="predicts 2 classes"):
        run(MapPredictor(pred, num_classes=2), arrays)


def test_summarize_per_image_means_and_dataset_level():
    arrays, pred = hand_case()
    results = run(MapPredictor(pred), arrays)
    summary = summarize(results, background_class=1)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["n_images"] == 2
    # per-image means weigh images equally ...
    assert row["fg_iou"] == pytest.approx((1.0 + 0.5) / 2)
    assert row["fg_dice"] == pytest.approx((1.0 + 2 / 3) / 2)
    # ... the dataset level pools pixels: tp 2, fn 2, fp 0
    assert row["fg_iou_dataset"] == pytest.approx(0.5)
    assert row["fg_dice_dataset"] == pytest.approx(2 / 3)
    assert row["miou_dataset"] == pytest.approx((2 / 4 + 28 / 30) / 2)
    assert row["pixel_acc_dataset"] == pytest.approx(30 / 32)
    assert np.isnan(row["agreement"])
    # the same from the CSV rows (background class read from its column)
    frame = pd.DataFrame(result_rows(results))
    assert "cm_0_1" in frame and "confusion" not in frame
    again = summarize(frame)
    pd.testing.assert_frame_equal(summary, again)


def test_summarize_groups_by_model_variant_runtime():
    arrays, pred = hand_case()
    results = run(MapPredictor(pred), arrays) + run(
        MapPredictor(arrays.masks, runtime="keras"), arrays, variant="keras"
    )
    summary = summarize(results, background_class=1).set_index("variant")
    assert summary.loc["keras", "fg_iou"] == 1.0
    assert summary.loc["keras", "agreement"] == 1.0
    assert summary.loc["tflite-int8", "fg_iou"] == pytest.approx(0.75)


# --- evaluate_run with fake registry, runtimes and data -------------------------------------


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 3, size=(5, S, S)).astype(np.uint8)
    arrays = split_arrays(masks)
    calls = []

    def load_segmenter(runtime, artifact, threads=1, tile_overlap=None):
        assert tile_overlap is None  # resize mode
        calls.append((Path(artifact).parent.name, Path(artifact).stem, runtime))
        maps = masks.copy()
        if runtime == "litert":
            maps[:, 0, :] = 1  # the compressed model misses the first row
        return MapPredictor(maps, runtime=runtime)

    def load_whole(index, split, data, progress=None):
        assert (split, data.image_size, data.mode) == ("test", S, "resize")
        return arrays

    monkeypatch.setattr("unetq.evaluate.load_segmenter", load_segmenter)
    monkeypatch.setattr("unetq.evaluate.load_whole", load_whole)
    run_dir = tmp_path / "run"
    for model_id in ["xception-f32-bn-e50", "classic-f16-nobn-e5"]:
        d = run_dir / "models" / model_id
        d.mkdir(parents=True)
        for variant in ["keras", "tflite-fp32", "tflite-int16x8", "openvino-fp32"]:
            artifact_path(d, variant).write_bytes(b"x")
        (d / "openvino-fp32.bin").write_bytes(b"w")
    (run_dir / "models" / ".train").mkdir()
    orphan = run_dir / "models" / "orphan-f8-bn-e1"  # no model.keras: not one of the run's models
    orphan.mkdir()
    artifact_path(orphan, "tflite-fp32").write_bytes(b"x")
    cfg = StudyConfig.model_validate(
        {"data": {"image_size": S}, "evaluate": {"slow_variant_max_images": 2}}
    )
    index = SimpleNamespace(background_class=1, num_classes=3, root=tmp_path)
    return SimpleNamespace(run_dir=run_dir, cfg=cfg, index=index, calls=calls, masks=masks)


def test_evaluate_run_writes_every_model_variant_runtime(fake_run):
    path = evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    assert path == fake_run.run_dir / "model_performance_individual_results.csv"
    df = pd.read_csv(path, dtype={"image": str})
    # keras runs first for each model, then the registry's order, each on its runtime
    assert fake_run.calls == [
        ("classic-f16-nobn-e5", "model", "keras"),
        ("classic-f16-nobn-e5", "tflite-fp32", "litert"),
        ("classic-f16-nobn-e5", "tflite-int16x8", "litert"),
        ("classic-f16-nobn-e5", "openvino-fp32", "openvino"),
        ("xception-f32-bn-e50", "model", "keras"),
        ("xception-f32-bn-e50", "tflite-fp32", "litert"),
        ("xception-f32-bn-e50", "tflite-int16x8", "litert"),
        ("xception-f32-bn-e50", "openvino-fp32", "openvino"),
    ]
    counts = df.groupby(["model_id", "variant", "runtime"]).size()
    assert counts[("xception-f32-bn-e50", "keras", "keras")] == 5
    assert counts[("xception-f32-bn-e50", "openvino-fp32", "openvino")] == 5
    assert counts[("xception-f32-bn-e50", "tflite-int16x8", "litert")] == 2  # slow variant
    assert len(df) == 2 * (5 + 5 + 5 + 2)
    assert [f"cm_{t}_{p}" for t in range(3) for p in range(3)] == list(df.columns[-9:])
    row = df[(df.model_id == "xception-f32-bn-e50") & (df.variant == "keras")].iloc[0]
    assert (row.Model, row.Epoch, row.Filters, row.Normalization) == (
        "xception-f32-bn-e50",
        50,
        32,
        "BatchNorm",
    )
    assert row.Quantization == "no compression" and row.Image_Name == row.image == "img_0"
    assert row.IoU_score == row.fg_iou == 1.0
    lite = df[(df.variant == "tflite-fp32") & (df.runtime == "litert")]
    expected = [1 - S / (S * S) + np.mean(m[0] == 1) * S / (S * S) for m in fake_run.masks]
    assert lite.agreement.tolist()[:5] == pytest.approx(expected)
    assert (df[df.runtime == "openvino"].agreement == 1.0).all()
    summary = summarize(df).set_index(["model_id", "variant", "runtime"])
    assert summary.loc[("classic-f16-nobn-e5", "tflite-int16x8", "litert"), "n_images"] == 2
    # the merged table follows: accuracy rows now, bench columns when bench has run
    average = pd.read_csv(fake_run.run_dir / "model_performance_average_results.csv")
    assert len(average) == 2 * 4 and average["threads"].isna().all()
    assert set(average["IoU_score"]) <= set(summary["fg_iou"])


def test_evaluate_run_resumes_from_part_files(fake_run):
    evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    csv = fake_run.run_dir / "model_performance_individual_results.csv"
    first = csv.read_text()
    fake_run.calls.clear()
    evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    assert fake_run.calls == []  # everything finished: nothing is predicted again
    assert csv.read_text() == first
    # a lost part is redone alone; agreement still uses the stored keras class maps
    part = fake_run.run_dir / ".eval" / "xception-f32-bn-e50" / "tflite-fp32.csv"
    part.unlink()
    evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    assert fake_run.calls == [("xception-f32-bn-e50", "tflite-fp32", "litert")]
    assert csv.read_text() == first
    # lost keras class maps are rebuilt by predicting with keras again (and nothing else)
    fake_run.calls.clear()
    (fake_run.run_dir / ".eval" / "xception-f32-bn-e50" / "keras_classes.npz").unlink()
    evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    assert fake_run.calls == [("xception-f32-bn-e50", "model", "keras")]
    assert csv.read_text() == first
    # new file times alone (a copied or touched run folder) redo nothing
    fake_run.calls.clear()
    artifact = fake_run.run_dir / "models" / "classic-f16-nobn-e5" / "tflite-int16x8.tflite"
    later = part.stat().st_mtime + 10
    os.utime(artifact, (later, later))
    evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    assert fake_run.calls == []
    assert csv.read_text() == first
    # a model re-exported after its part was written (new content) is evaluated again
    artifact.write_bytes(b"y")
    evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    assert fake_run.calls == [("classic-f16-nobn-e5", "tflite-int16x8", "litert")]


def test_evaluate_run_redoes_parts_when_the_image_count_changes(fake_run):
    evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    fake_run.calls.clear()
    fake_run.cfg.evaluate.max_images = 3
    path = evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg)
    # int16x8 still holds its 2 images; every other pair is redone on 3
    assert len(fake_run.calls) == 6
    assert len(pd.read_csv(path)) == 2 * (3 + 3 + 3 + 2)


def test_evaluate_run_without_openvino_and_without_models(fake_run, tmp_path):
    for xml in fake_run.run_dir.glob("models/*/openvino-fp32.bin"):
        xml.unlink()  # an IR without its weights is not a variant to run
    df = pd.read_csv(evaluate_run(fake_run.run_dir, fake_run.index, "test", fake_run.cfg))
    assert set(df.runtime) == {"keras", "litert"}
    with pytest.raises(ModelError, match="no trained models"):
        evaluate_run(tmp_path / "empty", fake_run.index, "test", fake_run.cfg)


def test_model_factors_from_id_and_trained_csv():
    assert model_factors("classic-f16-nobn-e5") == {
        "Epoch": 5,
        "Filters": 16,
        "Normalization": "NoBatchNorm",
    }
    trained = pd.DataFrame(
        {"model_id": ["odd"], "epochs": [7], "filters": [8], "batchnorm": [True]}
    )
    assert model_factors("odd", trained) == {
        "Epoch": 7,
        "Filters": 8,
        "Normalization": "BatchNorm",
    }
    assert model_factors("odd")["Epoch"] is None
