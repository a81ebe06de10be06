"""The test fg IoU of a run's OpenVINO variants compiled at f32 beside the run's own figures (the
CPU plugin's default precision: bf16 on CPUs that have it), to tell a conversion's error from
the precision the plugin runs it in.

    python benchmarks/f32_accuracy.py --run runs/onnx/bench [--variants openvino-fp32]

Evaluates on the run's test split exactly as `unetq evaluate` does (resized, or by tiles in
tile mode), one thread per core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def f32_fg_iou(run_dir: Path, variant: str) -> tuple[float, int]:
    from unetq.config import tile_overlap
    from unetq.data import load_whole, open_dataset
    from unetq.evaluate import evaluate_predictor
    from unetq.runfolder import RunFolder
    from unetq.runtimes import TiledPredictor, load_predictor, usable_cores

    run = RunFolder(run_dir)
    cfg = run.load_config()
    index = open_dataset(cfg.data, download=False)
    [model_id] = run.model_ids()
    predictor = load_predictor(
        "openvino", run.artifact(model_id, variant), usable_cores(), precision="f32"
    )
    overlap = tile_overlap(cfg.data)
    if overlap is not None:
        predictor = TiledPredictor(predictor, overlap)
    results = evaluate_predictor(
        predictor,
        load_whole(index, "test", cfg.data),
        model_id=model_id,
        variant=variant,
        split="test",
        background_class=index.background_class,
        num_classes=index.num_classes,
    )
    scores = np.array([r.fg_iou for r in results], float)
    return float(np.nanmean(scores)), len(results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--variants", default="openvino-fp32")
    args = p.parse_args()
    average = pd.read_csv(args.run / "model_performance_average_results.csv")
    original = average[average["variant"].isin(["keras", "onnx", "tflite"])]["fg_iou"].iloc[0]
    for variant in args.variants.split(","):
        rows = average[average["variant"] == variant]
        reported, precision = rows["fg_iou"].iloc[0], rows["precision"].iloc[0]
        f32, images = f32_fg_iou(args.run, variant)
        print(
            f"{variant}: fg IoU at f32 {f32:.6f} ({100 * (f32 - original):+.3f} points against "
            f"the original's {original:.6f}); as run ({precision}) {reported:.6f} "
            f"({100 * (reported - original):+.3f} points); {images} test images"
        )


if __name__ == "__main__":
    main()
