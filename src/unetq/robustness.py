"""Robustness: how each variant holds up under image corruptions, against the float model.

Every (condition, severity) corrupts the test images once at their original resolution,
resizes them as the data cache does, and runs every chosen model and variant on them. Each
(condition, severity) is a unit (unetq.work) with a part file, so an interrupted run resumes
where it stopped; a part counts as finished only if its record names every chosen (model,
variant) by the content of its artifact, and the same images.
"""

from __future__ import annotations

import gc
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from unetq.runfolder import RunFolder, artifact_digest, model_origin, read_csv, stamp_path
from unetq.runtimes import load_segmenter, usable_cores
from unetq.variants import VARIANTS, for_origin
from unetq.work import Stage, Unit, run_stage, write_record

METRICS = ("fg_iou", "fg_dice", "miou")
PART_COLUMNS = [
    "model_id",
    "variant",
    "condition",
    "severity",
    "n_images",
    *METRICS,
    "agreement",
]


def choose_models(run_dir: Path, names: list[str] | None) -> list[str]:
    """The configured models, else per filter width the longest-trained (batch norm first), and
    every model that is not of the training grid (a user's own, `unetq benchmark`)."""
    available = RunFolder(run_dir).model_ids()
    if names:
        missing = [n for n in names if n not in available]
        if missing:
            raise ConfigError(f"robustness.models not trained in {run_dir}: {', '.join(missing)}")
        return list(dict.fromkeys(names))
    parsed = [(m, ModelId.parse(m)) for m in available]
    grid = [(m, i) for m, i in parsed if i is not None]
    best: dict[int, tuple[str, ModelId]] = {}
    for model_id, identity in sorted(grid, key=lambda g: (-g[1].epochs, not g[1].batchnorm)):
        best.setdefault(identity.filters, (model_id, identity))
    return [best[f][0] for f in sorted(best)] + [m for m, i in parsed if i is None]


def robustness_variants(names: list[str]) -> list[str]:
    """The configured variants, the original first (its class maps are the agreement
    reference)."""
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise ConfigError(
            f"unknown robustness.variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}"
        )
    return sorted(dict.fromkeys(names), key=lambda v: not VARIANTS[v].original)


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
    artifacts = [
        (m, v)
        for m in models
        for v in for_origin(variants, model_origin(run.model_file(m)))[0]  # keras: its original
        if run.artifact(m, v).exists()
    ]
    if not artifacts:
        raise ModelError(
            f"none of robustness.variants ({', '.join(variants)}) exists for "
            f"{', '.join(models)} in {run.models_dir}"
        )
    split = cfg.evaluate.split
    test = load_whole(index, split, cfg.data, progress=progress)
    n = min(len(test.names), rcfg.max_images or len(test.names))
    if n == 0:
        raise DataError(f"split '{split}' of {index.root} is empty: no images for robustness")
    return run_stage(RobustnessStage(run.root, cfg, index, artifacts, test, n), progress)


@dataclass
class RobustnessStage(Stage):
    """Robustness as a stage: a unit per (condition, severity), holding every chosen model and
    variant on the same images; models stay loaded from one unit to the next."""

    root: Path
    cfg: StudyConfig
    index: Any
    artifacts: list[tuple[str, str]]  # (model_id, variant), keras first within a model
    test: Any  # the split's whole images and masks
    n: int  # images used

    name = "robustness"

    def __post_init__(self) -> None:
        self._predictors: dict = {}
        self._originals: list[np.ndarray] | None = None

    @property
    def names(self) -> list[str]:
        return list(self.test.names[: self.n])

    def units(self) -> list[Unit]:
        run, rcfg = RunFolder(self.root), self.cfg.robustness
        digests = {f"{m}/{v}": artifact_digest(run.artifact(m, v)) for m, v in self.artifacts}
        inputs = {"artifacts": digests, "images": images_key(self.names, rcfg.seed), "n": self.n}
        jobs = [("clean", 0)]
        jobs += [(c, s) for c in rcfg.conditions for s in sorted(set(rcfg.severities))]
        units = []
        for condition, severity in jobs:
            part = run.robustness_part(condition, severity)
            units.append(Unit((condition, severity), stamp_path(part), inputs, (part,)))
        return units

    def run(self, group: list[Unit], progress: Any = None) -> None:
        for unit in group:
            condition, severity = unit.key
            images = self._images(condition, severity)
            rows, reference, current = [], None, None
            for model_id, variant in self.artifacts:
                if model_id != current:  # the original comes first: its maps are the reference
                    reference, current = None, model_id
                pred = self._predictor(model_id, variant).predict(images)
                if VARIANTS[variant].original:
                    reference = pred
                row = {"model_id": model_id, "variant": variant}
                row.update(condition=condition, severity=severity, n_images=self.n)
                row.update(score_maps(self.test.masks[: self.n], pred, reference, self.index))
                rows.append(row)
            write_csv(unit.outputs[0], rows, columns=PART_COLUMNS)
            write_record(unit)

    def _images(self, condition: str, severity: int):
        """The test images under one condition (clean: as loaded)."""
        if severity == 0:
            return self.test.images[: self.n]
        if self._originals is None:  # decoded only when some corrupted part is missing
            self._originals = [read_image(self.index.pair(name).image) for name in self.names]
        seed = self.cfg.robustness.seed
        images = [
            apply_condition(img, condition, severity, seed, name)
            for img, name in zip(self._originals, self.names, strict=True)
        ]
        if self.cfg.data.mode == "tile":
            return images
        return np.stack([resize_image(i, self.cfg.data.image_size) for i in images])

    def _predictor(self, model_id: str, variant: str):
        if (model_id, variant) not in self._predictors:
            self._predictors[model_id, variant] = load_segmenter(
                VARIANTS[variant].runtime,
                RunFolder(self.root).artifact(model_id, variant),
                usable_cores(),
                tile_overlap(self.cfg.data),
            )
        return self._predictors[model_id, variant]

    def close(self) -> None:
        self._predictors.clear()
        gc.collect()

    def merge(self, units: list[Unit], failures: dict) -> Path:
        return write_robustness_csv(self.root, [unit.outputs[0] for unit in units])


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


def write_robustness_csv(run_dir: Path, parts: list[Path] | None = None) -> Path:
    """Join the part files (default: every part on disk) and add the change of each metric
    against the clean images."""
    run = RunFolder(run_dir)
    if parts is None:
        parts = run.robustness_parts()
    frames = [read_csv(p) for p in parts]
    frames = [f for f in frames if not f.empty]
    out = run.robustness_csv
    columns = PART_COLUMNS + [f"{m}_change" for m in METRICS]
    if not frames:
        write_csv(out, [], columns=columns)
        return out
    df = pd.concat(frames, ignore_index=True)
    clean = df[df["condition"] == "clean"].set_index(["model_id", "variant"])
    keys = pd.MultiIndex.from_frame(df[["model_id", "variant"]])
    for metric in METRICS:
        base = clean[metric].reindex(keys).to_numpy(float)
        df[f"{metric}_change"] = df[metric].to_numpy(float) - base
    df = df.sort_values(["model_id", "variant", "condition", "severity"])
    write_csv(out, df.to_dict("records"), columns=columns)
    return out
