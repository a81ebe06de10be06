"""The foreground IoU of `unetq predict` masks, computed from the PNGs alone, against a run's
report: a check that what users get from `predict` is what the report scored.

    python benchmarks/mask_iou.py --run runs/binary/bench --masks DATA/masks [--out OUT]

Copies the run's test images (the names in model_performance_individual_results.csv) to
OUT/images, runs `unetq predict --run RUN` on them (the recommended variant), and compares the
mean over images of |pred & truth| / |pred | truth| (mask value > 0 is foreground; an image with
neither scores 1) with the report's fg IoU of that variant.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def mean_fg_iou(predicted: Path, truth: Path, names: list[str]) -> float:
    ious = []
    for name in names:
        pred = np.asarray(Image.open(predicted / f"{name}_mask.png")) > 0
        [mask] = [p for p in truth.glob(f"{name}.*")]
        true = np.asarray(Image.open(mask).convert("L")) > 0
        union = (pred | true).sum()
        ious.append((pred & true).sum() / union if union else 1.0)
    return float(np.mean(ious))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--masks", type=Path, required=True, help="the dataset's masks folder")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    from unetq.predict import recommended
    from unetq.variants import VARIANTS, is_original

    individual = pd.read_csv(args.run / "model_performance_individual_results.csv")
    originals = individual.variant.map(is_original).astype(bool)  # keras, onnx or tflite
    names = sorted(individual.loc[originals, "image"].astype(str).unique())
    out = args.out or Path(tempfile.mkdtemp(prefix="unetq-mask-iou-"))
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    source = args.masks.parent / "images"
    for name in names:
        [image] = list(source.glob(f"{name}.*"))
        shutil.copy(image, images)
    unetq = Path(sys.executable).parent / "unetq"
    command = [str(unetq), "predict", "--run", str(args.run), "--images", str(images)]
    subprocess.run([*command, "--out", str(out / "masks"), "--no-overlays"], check=True)
    artifact = recommended(args.run).artifact
    given = {f"model{v.suffix}": v.name for v in VARIANTS.values() if v.original}
    variant = given.get(artifact.name, artifact.stem)
    average = pd.read_csv(args.run / "model_performance_average_results.csv")
    reported = float(average.loc[average.variant == variant, "fg_iou"].iloc[0])
    mine = mean_fg_iou(out / "masks", args.masks, names)
    print(f"{variant}: fg IoU from the mask PNGs {mine:.6f}, report {reported:.6f}, "
          f"difference {abs(mine - reported):.2e} over {len(names)} images")  # fmt: skip


if __name__ == "__main__":
    main()
