"""Robustness: how each variant holds up under image corruptions, against the float model.

Every (condition, severity) corrupts the test images once at their original resolution,
resizes them as the data cache does, and runs every chosen model and variant on them. Results
go to one part file per (condition, severity), so an interrupted run resumes where it stopped;
a part counts as finished only if it holds every chosen (model, variant) on the same images,
computed from artifacts of the same content.
"""

from __future__ import annotations

import gc
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from unetq.config import StudyConfig, tile_overlap
from unetq.data import load_whole, read_image
from unetq.data.conditions import apply_condition, check_conditions
from unetq.errors import ConfigError, DataError, ModelError
from unetq.fileio import write_csv
from unetq.metrics import agreement, confusion_matrix, scores
from unetq.records import ModelId
from unetq.runfolder import RunFolder, artifact_digest, read_csv, say_reused
from unetq.runtimes import load_segmenter, usable_cores
from unetq.variants import VARIANTS

METRICS = ("fg_iou", "fg_dice", "miou")
PART_COLUMNS = [
    "model_id",
    "variant",
    "condition",
    "severity",
    "n_images",
    *METRICS,
    "agreement",
    "images_key",  # which images and seed a part was computed on; not in robustness.csv
    "artifact_sha256",  # which artifact content a row was computed from; not in robustness.csv
]
PART_ONLY = ("images_key", "artifact_sha256")


def choose_models(run_dir: Path, names: list[str] | None) -> list[str]:
    """The configured models, else per filter width the longest-trained (batch norm first)."""
    available = RunFolder(run_dir).model_ids()
    if names:
        missing = [n for n in names if n not in available]
        if missing:
            raise ConfigError(f"robustness.models not trained in {run_dir}: {', '.join(missing)}")
        return list(dict.fromkeys(names))
    grid = [(m, ModelId.parse(m)) for m in available]
    grid = [(m, i) for m, i in grid if i is not None]
    best: dict[int, tuple[str, ModelId]] = {}
    for model_id, identity in sorted(grid, key=lambda g: (-g[1].epochs, not g[1].batchnorm)):
        best.setdefault(identity.filters, (model_id, identity))
    return [best[f][0] for f in sorted(best)]


def robustness_variants(names: list[str]) -> list[str]:
    """The configured variants, keras first (its class maps are the agreement reference)."""
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise ConfigError(
            f"unknown robustness.variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}"
        )
    return sorted(dict.fromkeys(names), key=lambda v: v != "keras")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def robustness_run(run_dir: Path, index, cfg: StudyConfig, progress=None) -> Path:
    """Write robustness.csv: one row per (model, variant, condition, severity), clean rows too.

    Clean rows have condition 'clean' and severity 0; `<metric>_change` is the metric minus the
    clean value of the same model and variant; `agreement` is the share of pixels whose class
    equals the keras model's on the same (corrupted) images.
    """
    run = RunFolder(run_dir)
    rcfg = cfg.robustness
    check_conditions(rcfg.conditions, rcfg.severities)
    variants = robustness_variants(rcfg.variants)
    models = choose_models(run.root, rcfg.models)
    if not models:
        raise ModelError(f"no trained models for the robustness step in {run.models_dir}")
    artifacts = {
        (m, v): path for m in models for v in variants if (path := run.artifact(m, v)).exists()
    }
    if not artifacts:
        raise ModelError(
            f"none of robustness.variants ({', '.join(variants)}) exists for "
            f"{', '.join(models)} in {run.models_dir}"
        )
    digests = {key: artifact_digest(path) for key, path in artifacts.items()}
    split = cfg.evaluate.split
    test = load_whole(index, split, cfg.data, progress=progress)
    tiled = cfg.data.mode == "tile"
    n = min(len(test.names), rcfg.max_images or len(test.names))
    if n == 0:
        raise DataError(f"split '{split}' of {index.root} is empty: no images for robustness")
    names = list(test.names[:n])
    truth = test.masks[:n]
    key = images_key(names, rcfg.seed)
    jobs = [("clean", 0)] + [(c, s) for c in rcfg.conditions for s in sorted(set(rcfg.severities))]
    parts = [run.robustness_part(c, s) for c, s in jobs]
    pending = [
        (job, part)
        for job, part in zip(jobs, parts, strict=True)
        if not part_done(part, digests, n, key)
    ]
    task = None
    if progress is not None:
        task = progress.add_task("robustness", total=len(jobs), completed=len(jobs) - len(pending))
    originals: list[np.ndarray] | None = None
    predictors: dict = {}
    try:
        for (condition, severity), part in pending:
            if severity == 0:
                images = test.images[:n]
            else:
                if originals is None:  # decoded only when some corrupted part is missing
                    originals = [read_image(index.pair(name).image) for name in names]
                images = [
                    apply_condition(img, condition, severity, rcfg.seed, name)
                    for img, name in zip(originals, names, strict=True)
                ]
                if not tiled:
                    images = np.stack([resize_image(i, cfg.data.image_size) for i in images])
            rows = []
            for model_id in models:
                reference = None
                for variant in variants:
                    if (model_id, variant) not in artifacts:
                        continue
                    if (model_id, variant) not in predictors:
                        predictors[model_id, variant] = load_segmenter(
                            VARIANTS[variant].runtime,
                            artifacts[model_id, variant],
                            usable_cores(),
                            tile_overlap(cfg.data),
                        )
                    pred = predictors[model_id, variant].predict(images)
                    if variant == "keras":
                        reference = pred
                    row = {"model_id": model_id, "variant": variant}
                    row.update(condition=condition, severity=severity, n_images=n)
                    row.update(score_maps(truth, pred, reference, index))
                    row["images_key"] = key
                    row["artifact_sha256"] = digests[model_id, variant]
                    rows.append(row)
            write_csv(part, rows, columns=PART_COLUMNS)
            if task is not None:
                progress.advance(task)
    finally:
        predictors.clear()
        gc.collect()
    if task is not None:
        progress.remove_task(task)
    say_reused(progress, "robustness", len(pending), len(jobs))
    return write_robustness_csv(run.root, parts)


def score_maps(truth: np.ndarray, pred: np.ndarray, reference, index) -> dict[str, float]:
    """Per-image means of fg IoU/Dice and mIoU; pixel agreement with the keras class maps."""
    per_image = [
        scores(confusion_matrix(t, p, index.num_classes), index.background_class)
        for t, p in zip(truth, pred, strict=True)
    ]
    out = {m: float(np.nanmean([s[m] for s in per_image])) for m in METRICS}
    if reference is None:
        out["agreement"] = np.nan
    else:  # over every pixel of every image (sizes may differ in tile mode)
        flat = [np.concatenate([np.ravel(m) for m in maps]) for maps in (reference, pred)]
        out["agreement"] = float(agreement(*flat))
    return out


def images_key(names: list[str], seed: int) -> str:
    """A short fingerprint of the evaluated images and the corruption seed."""
    text = "\n".join([*names, str(seed)])
    return f"{zlib.crc32(text.encode()):08x}"


def part_done(part: Path, digests: dict, n: int, key: str) -> bool:
    """Finished: exactly the expected (model, variant) rows on the same images, each computed
    from an artifact of the content it has now (`digests`)."""
    df = read_csv(part, dtype={"model_id": str, "variant": str, "images_key": str})
    if not set(PART_COLUMNS) <= set(df.columns) or len(df) != len(digests):
        return False
    pairs = zip(df["model_id"], df["variant"], strict=True)
    found = dict(zip(pairs, df["artifact_sha256"], strict=True))
    if found != digests:
        return False
    return bool((df["n_images"] == n).all() and (df["images_key"] == key).all())


def write_robustness_csv(run_dir: Path, parts: list[Path] | None = None) -> Path:
    """Join the part files (default: every part on disk) and add the change of each metric
    against the clean images."""
    run = RunFolder(run_dir)
    if parts is None:
        parts = run.robustness_parts()
    frames = [read_csv(p) for p in parts]
    frames = [f for f in frames if not f.empty]
    out = run.robustness_csv
    columns = [c for c in PART_COLUMNS if c not in PART_ONLY]
    columns += [f"{m}_change" for m in METRICS]
    if not frames:
        write_csv(out, [], columns=columns)
        return out
    df = pd.concat(frames, ignore_index=True).drop(columns=list(PART_ONLY), errors="ignore")
    clean = df[df["condition"] == "clean"].set_index(["model_id", "variant"])
    keys = pd.MultiIndex.from_frame(df[["model_id", "variant"]])
    for metric in METRICS:
        base = clean[metric].reindex(keys).to_numpy(float)
        df[f"{metric}_change"] = df[metric].to_numpy(float) - base
    df = df.sort_values(["model_id", "variant", "condition", "severity"])
    write_csv(out, df.to_dict("records"), columns=columns)
    return out
