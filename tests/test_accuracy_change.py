"""benchmarks/accuracy_change.py: two run folders compared image by image (hand-made CSVs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from unetq.runfolder import RunFolder

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "accuracy_change.py"
spec = importlib.util.spec_from_file_location("accuracy_change", SCRIPT)
accuracy_change = importlib.util.module_from_spec(spec)
spec.loader.exec_module(accuracy_change)


def run_with(root: Path, scores: dict[str, list[float]]) -> Path:
    rows = [
        {"model_id": "m", "variant": v, "split": "test", "image": i, "fg_iou": s}
        for v, values in scores.items()
        for i, s in enumerate(values)
    ]
    run = RunFolder(root)
    run.root.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run.individual_csv, index=False)
    return run.root


KERAS = [0.80, 0.60, 0.70, 0.50]


def test_losses_and_their_change_per_image(tmp_path):
    before = run_with(tmp_path / "a", {"keras": KERAS, "int8": [0.79, 0.60, 0.70, 0.49]})
    after = run_with(tmp_path / "b", {"keras": KERAS, "int8": [0.80, 0.58, 0.70, 0.49]})
    frame = accuracy_change.changes(
        accuracy_change.per_image(before, "fg_iou"),
        accuracy_change.per_image(after, "fg_iou"),
        "fg_iou",
    )
    [row] = frame.to_dict("records")
    # losses: (0.01 + 0 + 0 + 0.01) / 4 and (0 + 0.02 + 0 + 0.01) / 4, in points
    assert row["loss_before"] == pytest.approx(0.5) and row["loss_after"] == pytest.approx(0.75)
    assert row["change"] == pytest.approx(0.25) and row["images"] == 4
    assert row["change_low"] <= row["change"] <= row["change_high"]


def test_a_loss_beyond_the_noise_fails_and_other_models_refuse(tmp_path, capsys):
    before = run_with(tmp_path / "a", {"keras": KERAS, "int8": KERAS})
    worse = run_with(tmp_path / "b", {"keras": KERAS, "int8": [s - 0.02 for s in KERAS]})
    assert accuracy_change.main([str(before), str(worse)]) == 1
    assert "1 (model, variant) lose more" in capsys.readouterr().out
    assert accuracy_change.main([str(worse), str(before)]) == 0
    other = run_with(tmp_path / "c", {"keras": [s + 0.1 for s in KERAS], "int8": KERAS})
    with pytest.raises(SystemExit, match="not the same models"):
        accuracy_change.main([str(before), str(other)])
    no_keras = run_with(tmp_path / "d", {"int8": KERAS})
    with pytest.raises(SystemExit, match="no keras test results"):
        accuracy_change.main([str(before), str(no_keras)])
