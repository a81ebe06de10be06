import numpy as np
import pandas as pd
import pytest

from unetq.report.tables import factor_effects, main_table, pareto_front, with_model_factors


def test_pareto_front_hand_case():
    latency = np.array([10.0, 5.0, 20.0, 7.0, 30.0])
    accuracy = np.array([0.80, 0.70, 0.85, 0.65, 0.84])
    # 5 ms/0.70 is fastest; 10/0.80 beats 7/0.65; 20/0.85 is best; 30/0.84 is dominated.
    assert pareto_front(latency, accuracy).tolist() == [True, True, True, False, False]


def test_model_factors_parsed_from_ids():
    df = with_model_factors(
        pd.DataFrame({"model_id": ["xception-f32-bn-e50", "classic-f8-nobn-e3"]})
    )
    assert df["filters"].tolist() == [32, 8]
    assert df["batchnorm"].tolist() == [True, False]
    assert df["epochs"].tolist() == [50, 3]
    assert df["arch"].tolist() == ["xception", "classic"]


def _average_rows():
    rows = []
    for bn in ("bn", "nobn"):
        for variant, runtime, ms in (("keras", "keras", 20.0), ("tflite-int8", "litert", 8.0)):
            for threads, scale in ((1, 1.0), (2, 0.6)):
                rows.append(
                    {
                        "model_id": f"xception-f8-{bn}-e2",
                        "variant": variant,
                        "runtime": runtime,
                        "threads": threads,
                        "latency_ms_median": ms * scale + (1 if bn == "bn" else 0),
                        "fg_iou": 0.7 if variant == "keras" else 0.69,
                        "fg_dice": 0.8,
                        "size_bytes": 2_000_000,
                        "model_memory_mb": 10.0,
                    }
                )
    return pd.DataFrame(rows)


def test_main_table_pivots_threads_into_columns():
    table = main_table(_average_rows())
    assert len(table) == 4
    row = table[(table["model"] == "xception-f8-bn-e2") & (table["variant"] == "tflite-int8")]
    assert row["ms_1t"].item() == pytest.approx(9.0)
    assert row["ms_2t"].item() == pytest.approx(8.0 * 0.6 + 1)
    assert row["size_mb"].item() == pytest.approx(2.0)


def test_factor_effects_are_paired_differences():
    effects = factor_effects(_average_rows(), threads=1)
    bn = effects[(effects["factor"] == "batchnorm") & (effects["metric"] == "latency ms")]
    assert bn["mean_change"].item() == pytest.approx(1.0)  # bn adds 1 ms in every pair
    assert bn["pairs"].item() == 2
    var = effects[(effects["factor"] == "variant") & (effects["metric"] == "fg IoU")]
    assert var["change"].item() == "keras -> tflite-int8"
    assert var["mean_change"].item() == pytest.approx(-0.01)


def test_int8_losses_name_plain_int8_beyond_the_budget_and_what_the_guard_keeps():
    from unetq.report.tables import int8_losses

    fg = {
        "keras": 0.500,
        "tflite-int8": 0.490,  # 1.0 point
        "tflite-int8-mixed": 0.496,  # 0.4
        "openvino-int8": 0.497,  # 0.3: within the budget
        "openvino-int8-guarded": 0.498,
    }
    average = pd.DataFrame(
        {"model_id": "m", "variant": list(fg), "runtime": "r", "fg_iou": list(fg.values())}
    )
    (loss,) = int8_losses(average, "m", budget_points=0.5)
    assert loss["plain"] == "tflite-int8" and loss["guarded"] == "tflite-int8-mixed"
    assert loss["drop"] == pytest.approx(1.0) and loss["guarded_drop"] == pytest.approx(0.4)
    assert int8_losses(average, "m", budget_points=1.5) == []
    no_guard = average[average["variant"] != "tflite-int8-mixed"]
    assert np.isnan(int8_losses(no_guard, "m", 0.5)[0]["guarded_drop"])


def test_guard_table_sets_the_predicted_drop_beside_the_measured_test_drop(tmp_path):
    from unetq.fileio import write_json
    from unetq.report.tables import guard_table
    from unetq.runfolder import RunFolder, sidecar_path

    run = RunFolder(tmp_path)
    (run.model_dir("m") / "model.keras").parent.mkdir(parents=True)
    (run.model_dir("m") / "model.keras").write_bytes(b"")
    details = {
        "validation_fg_iou_float": 0.795,
        "validation_fg_iou": 0.7908,
        "predicted_drop_high": 0.0071,
        "budget_met": True,
        "float_operations": ["Convolution_1"],
    }
    write_json(sidecar_path(run.artifact("m", "openvino-int8-guarded")), {"details": details})
    average = pd.DataFrame(
        {
            "model_id": ["m"] * 3,
            "variant": ["keras", "openvino-int8", "openvino-int8-guarded"],
            "threads": [1, 1, 1],
            "latency_ms_median": [9.0, 1.5, 1.75],
            "fg_iou": [0.782, 0.723, 0.762],
        }
    )
    row = guard_table(tmp_path, average).iloc[0]
    assert row["variant"] == "openvino-int8-guarded" and row["kept_in_float"] == 1
    assert row["predicted_drop"] == pytest.approx(0.42)  # 100 * (0.795 - 0.7908)
    assert row["predicted_high"] == pytest.approx(0.71)
    assert row["test_drop"] == pytest.approx(2.0)  # 100 * (0.782 - 0.762)
    assert row["cost_ms"] == pytest.approx(0.25)
