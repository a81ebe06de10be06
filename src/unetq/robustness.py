"""Robustness: how each variant holds up under image corruptions, against the float model.

Every (condition, severity) corrupts the test images once at their original resolution,
resizes them as the data cache does, and runs every chosen model and variant on them. Results
go to one part file per (condition, severity), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from unetq.config import StudyConfig
from unetq.data.conditions import apply_condition, check_conditions
from unetq.fileio import write_csv
from unetq.report.tables import ROBUSTNESS_CSV, read_csv, with_model_factors

PART_DIR = ".robustness"


def choose_models(run_dir: Path, names: list[str] | None) -> list[str]:
    """The configured models, else per filter width the longest-trained (batch norm first)."""
    available = sorted(p.parent.name for p in (run_dir / "models").glob("*/model.keras"))
    if names:
        missing = [n for n in names if n not in available]
        if missing:
            from unetq.errors import ConfigError

            raise ConfigError(f"robustness.models not trained in {run_dir}: {', '.join(missing)}")
        return list(names)
    df = with_model_factors(pd.DataFrame({"model_id": available}))
    if df.empty:
        return []
    df = df.sort_values(["filters", "epochs", "batchnorm"], ascending=[True, False, False])
    return df.groupby("filters", sort=True).head(1)["model_id"].tolist()


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def robustness_run(run_dir: Path, index, cfg: StudyConfig, progress=None) -> Path:
    """Write robustness.csv: one row per (model, variant, condition, severity), clean rows too."""
    from unetq.compress import VARIANTS, artifact_path
    from unetq.data import load_split, read_image
    from unetq.metrics import agreement, confusion_matrix, scores
    from unetq.runtimes import load_predictor

    rcfg = cfg.robustness
    check_conditions(rcfg.conditions, rcfg.severities)
    models = choose_models(run_dir, rcfg.models)
    test = load_split(index, cfg.evaluate.split, cfg.data.image_size)
    names = test.names[: rcfg.max_images] if rcfg.max_images else test.names
    truth = test.masks[: len(names)]
    originals = [read_image(index.pair(name).image) for name in names]
    jobs = [("clean", 0)] + [(c, s) for c in rcfg.conditions for s in rcfg.severities]
    variants = [v for v in rcfg.variants if v in VARIANTS]
    parts = run_dir / PART_DIR
    task = progress.add_task("robustness", total=len(jobs)) if progress else None
    predictors = {}
    for condition, severity in jobs:
        part = parts / f"{condition}-{severity}.csv"
        if part.exists():
            if progress:
                progress.advance(task)
            continue
        images = np.stack(
            [
                resize_image(
                    img
                    if severity == 0
                    else apply_condition(img, condition, severity, rcfg.seed, name),
                    cfg.data.image_size,
                )
                for img, name in zip(originals, names, strict=True)
            ]
        )
        rows = []
        for model_id in models:
            reference = None
            for variant in variants:
                artifact = artifact_path(run_dir / "models" / model_id, variant)
                if not artifact.exists():
                    continue
                key = (model_id, variant)
                if key not in predictors:
                    predictors[key] = load_predictor(
                        VARIANTS[variant].runtime, artifact, threads=os.cpu_count() or 1
                    )
                pred = predictors[key].predict(images)
                if variant == "keras":
                    reference = pred
                per_image = [
                    scores(confusion_matrix(t, p, index.num_classes), index.background_class)
                    for t, p in zip(truth, pred, strict=True)
                ]
                rows.append(
                    {
                        "model_id": model_id,
                        "variant": variant,
                        "condition": condition,
                        "severity": severity,
                        "n_images": len(names),
                        "fg_iou": float(np.mean([s["fg_iou"] for s in per_image])),
                        "fg_dice": float(np.mean([s["fg_dice"] for s in per_image])),
                        "miou": float(np.mean([s["miou"] for s in per_image])),
                        "agreement": float(agreement(reference, pred))
                        if reference is not None
                        else np.nan,
                    }
                )
        write_csv(part, rows)
        if progress:
            progress.advance(task)
    return write_robustness_csv(run_dir)


def write_robustness_csv(run_dir: Path) -> Path:
    """Join the part files and add the change of each metric against the clean images."""
    frames = [read_csv(p) for p in sorted((run_dir / PART_DIR).glob("*.csv"))]
    frames = [f for f in frames if not f.empty]
    out = run_dir / ROBUSTNESS_CSV
    if not frames:
        write_csv(out, [])
        return out
    df = pd.concat(frames, ignore_index=True)
    clean = df[df["condition"] == "clean"].set_index(["model_id", "variant"])
    for metric in ("fg_iou", "fg_dice", "miou"):
        base = clean[metric]
        df[f"{metric}_change"] = [
            row[metric] - base.get((row["model_id"], row["variant"]), np.nan)
            for _, row in df.iterrows()
        ]
    df = df.sort_values(["model_id", "variant", "condition", "severity"])
    write_csv(out, df.to_dict("records"))
    return out
