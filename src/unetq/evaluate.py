"""Accuracy: run every variant of every trained model over a split and score each image.

Per image: confusion matrix, fg IoU/Dice, mIoU, pixel accuracy, the original study's (flawed)
seed IoU/Dice, and agreement with the keras model's class map. `evaluate_run` is resumable:
each (model, variant, runtime) is a unit (unetq.work) whose part file lies in the run folder's
`.eval/<model_id>/`, with a record naming the artifact's content digest and the images; a rerun
skips parts computed on the same images from an artifact with the same content.

`evaluate_cross` runs the same machinery on every image (split 'all') of another dataset with
the run's classes and writes to `run_dir/cross/<name>/` (parts in its own `.eval/`).
"""

from __future__ import annotations

import gc
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetq.config import DataConfig, StudyConfig, tile_overlap
from unetq.data import ALL_SPLIT, detect_format, load_whole, open_dataset
from unetq.errors import ConfigError, DataError, ModelError
from unetq.fileio import atomic_path, write_csv, write_json
from unetq.metrics import agreement as pixel_agreement
from unetq.metrics import confusion_matrix, scores, seed_scores
from unetq.records import ImageResult
from unetq.results import (
    confusion_columns,
    read_individual_results,
    result_rows,
    summarize,
    with_study_columns,
    write_accuracy_average,
    write_average_results,
)
from unetq.runfolder import (
    RunFolder,
    artifact_digest,
    read_csv,
    read_json,
    stamp_path,
    variant_runs,
)
from unetq.runtimes import load_segmenter, usable_cores
from unetq.variants import VARIANTS, is_original
from unetq.work import Stage, Unit, run_stage, write_record

CROSS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
PREDICT_CHUNK = 8  # images per predict() call: small enough for a smooth progress bar


# --- one predictor over one split -------------------------------------------------------------


def evaluate_predictor(
    predictor: Any,
    arrays: Any,
    *,
    model_id: str,
    variant: str,
    split: str,
    background_class: int,
    num_classes: int,
    reference: dict[str, np.ndarray] | None = None,
    max_images: int | None = None,
    progress: Any = None,
    predictions_out: dict[str, np.ndarray] | None = None,
) -> list[ImageResult]:
    """Score the predictor's class maps on the first `max_images` images of `arrays`.

    `reference` maps image names to the keras model's class maps (for `agreement`). Without a
    reference, agreement is 1.0 for the keras variant run by keras (it is the reference) and nan
    otherwise. If `predictions_out` is a dict, the predicted class maps are stored in it by name.
    """
    n = len(arrays.names) if max_images is None else min(max_images, len(arrays.names))
    runtime = getattr(predictor, "runtime", variant)
    _check_compatible(predictor, arrays, model_id, variant, num_classes)
    task = None
    if progress is not None:
        task = progress.add_task(f"evaluate {model_id} {variant} ({runtime})", total=n)
    results: list[ImageResult] = []
    for start in range(0, n, PREDICT_CHUNK):
        stop = min(start + PREDICT_CHUNK, n)
        classes = predictor.predict(arrays.images[start:stop])
        for offset, pred in enumerate(classes):
            i = start + offset
            if pred.shape != arrays.masks[i].shape:
                raise ModelError(
                    f"{model_id} {variant} ({runtime}) returned a class map of shape "
                    f"{pred.shape}, expected {arrays.masks[i].shape}"
                )
            name = arrays.names[i]
            if predictions_out is not None:
                predictions_out[name] = pred
            results.append(
                _score_image(
                    arrays.masks[i],
                    pred,
                    name=name,
                    model_id=model_id,
                    variant=variant,
                    runtime=runtime,
                    split=split,
                    background_class=background_class,
                    num_classes=num_classes,
                    reference=reference,
                )
            )
        if task is not None:
            progress.advance(task, stop - start)
    if task is not None:
        progress.remove_task(task)
    return results


def _score_image(
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    name: str,
    model_id: str,
    variant: str,
    runtime: str,
    split: str,
    background_class: int,
    num_classes: int,
    reference: dict[str, np.ndarray] | None,
) -> ImageResult:
    cm = confusion_matrix(truth, pred, num_classes)
    s = scores(cm, background_class)
    seed = seed_scores(truth, pred)
    if reference is not None and name in reference:
        agree = pixel_agreement(pred, reference[name])
    elif reference is None and is_original(variant, runtime):
        agree = 1.0
    else:
        agree = float("nan")
    return ImageResult(
        model_id=model_id,
        variant=variant,
        runtime=runtime,
        split=split,
        image=name,
        fg_iou=s["fg_iou"],
        fg_dice=s["fg_dice"],
        miou=s["miou"],
        pixel_acc=s["pixel_acc"],
        agreement=agree,
        seed_iou=seed["seed_iou"],
        seed_dice=seed["seed_dice"],
        background_class=background_class,
        confusion=[int(c) for c in cm.reshape(-1)],
    )


def _check_compatible(predictor, arrays, model_id, variant, num_classes) -> None:
    hw = getattr(predictor, "input_hw", None)
    size = tuple(arrays.images[0].shape[:2]) if len(arrays.names) else hw
    if hw is not None and tuple(hw) != size:
        raise ModelError(
            f"{model_id} {variant} expects {hw[0]}x{hw[1]} images but the split holds "
            f"{size[0]}x{size[1]}; evaluate with data.image_size = {hw[0]}"
        )
    classes = getattr(predictor, "num_classes", None)
    if classes is not None and int(classes) != int(num_classes):
        raise ModelError(
            f"{model_id} {variant} predicts {classes} classes but the dataset has {num_classes}"
        )


# --- the reference class maps ---------------------------------------------------------------


def _save_reference(path: Path, maps: dict[str, np.ndarray]) -> None:
    """Class maps by image name (one array each: in tile mode their sizes differ)."""
    names = list(maps)
    arrays = {f"map_{i}": maps[n] for i, n in enumerate(names)}
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, names=np.array(names), **arrays)


def _load_reference(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            names = [str(n) for n in data["names"]]
            return {n: data[f"map_{i}"] for i, n in enumerate(names)}
    except (OSError, ValueError, KeyError):
        return None


# --- the whole run -----------------------------------------------------------------------------


def load_split_arrays(index, split: str, data: DataConfig, progress=None):
    arrays = load_whole(index, split, data, progress=progress)
    if len(arrays.names) == 0:
        raise DataError(f"split '{split}' of {getattr(index, 'root', 'the dataset')} is empty")
    return arrays


def evaluate_run(
    run_dir: Path, index: Any, split: str, cfg: Any, progress: Any = None, runner: Any = None
) -> Path:
    """Evaluate every variant of every model in run_dir on `split`; write the individual CSV.

    The original (keras, or a user's ONNX / TFLite file) runs first (its class maps are the
    agreement reference, kept in
    `.eval/<model_id>/keras_classes.npz`); slow variants (int16x8) see only the first
    `cfg.evaluate.slow_variant_max_images` images. Also refreshes the average CSV
    (results.write_average_results). `runner` evaluates the models elsewhere (unetq.cluster).
    Returns the individual CSV's path.
    """
    run = RunFolder(run_dir)
    stage = evaluate_stage(run, "", index, split, cfg, progress)
    path = run_stage(stage, progress, runner)
    write_average_results(run.root)  # keep the merged table current whatever ran last
    return path


def evaluate_stage(run: RunFolder, out: str, index: Any, split: str, cfg: Any, progress=None):
    """The evaluation of run's models on `split` of `index`, results under run/out; the split's
    images are read only when some model has a variant."""
    model_ids = run.model_ids()
    if not model_ids:
        raise ModelError(f"no trained models in {run.models_dir}")
    arrays = None
    if any(variant_runs(run.model_dir(m)) for m in model_ids):
        arrays = load_split_arrays(index, split, cfg.data, progress)
    classes = (index.num_classes, index.background_class)
    return EvaluateStage(run.root, out, split, cfg, arrays, *classes)


@dataclass
class EvaluateStage(Stage):
    """Accuracy as a stage: a unit per (model, variant), a part file each; a group per model,
    keras first (its class maps are the reference of the others' agreement)."""

    root: Path
    out: str  # results folder inside root: "" or cross/<name>
    split: str
    cfg: Any
    arrays: Any  # the split's images and masks (load_split_arrays), None when no variant exists
    num_classes: int
    background_class: int

    name = "evaluate"
    distributed = True

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.root)

    @property
    def results(self) -> RunFolder:
        return RunFolder(self.root / self.out)

    def units(self) -> list[Unit]:
        units = []
        for model_id in self.folder.model_ids():
            for vr in variant_runs(self.folder.model_dir(model_id)):
                names = _part_names(vr, self.arrays, self.cfg)
                part = self.results.eval_part(model_id, vr.variant)
                outputs = (part,)
                if is_original(vr.variant, vr.runtime):
                    outputs += (self.results.eval_reference(model_id),)
                inputs = {
                    "artifact_sha256": artifact_digest(vr.artifact),
                    "runtime": vr.runtime,
                    "images": len(names),
                    "images_sha1": _names_digest(names),
                }
                units.append(
                    Unit((model_id, vr.variant), stamp_path(part), inputs, outputs, model_id)
                )
        return units

    def run(self, group: list[Unit], progress: Any = None) -> None:
        model_id = group[0].group
        ref_path = self.results.eval_reference(model_id)
        reference = None if is_original(group[0].key[1]) else _load_reference(ref_path)
        has_original = self.folder.model_file(model_id).exists()
        for unit in group:
            variant = VARIANTS[unit.key[1]]
            is_reference = variant.original
            artifact = self.folder.artifact(model_id, variant.name)
            predictor = load_segmenter(
                variant.runtime, artifact, usable_cores(), tile_overlap(self.cfg.data)
            )
            produced: dict[str, np.ndarray] | None = {} if is_reference else None
            results = evaluate_predictor(
                predictor,
                self.arrays,
                model_id=model_id,
                variant=variant.name,
                split=self.split,
                background_class=self.background_class,
                num_classes=self.num_classes,
                reference=None if is_reference or not has_original else reference,
                max_images=unit.inputs["images"],
                progress=progress,
                predictions_out=produced,
            )
            del predictor
            gc.collect()
            if produced is not None:
                _save_reference(ref_path, produced)
                reference = produced
            write_csv(unit.outputs[0], result_rows(results))
            write_record(unit)

    def merge(self, units: list[Unit], failures: dict) -> Path:
        """The results folder's model_performance_individual_results.csv."""
        parts = [unit.outputs[0] for unit in units]
        return write_individual_results(self.folder, parts, self.results)

    def needs(self, group: list[Unit]) -> list[Path]:
        model_id = group[0].group
        results = self.results.eval_part(model_id, "keras").parent
        return [p for p in (self.folder.model_dir(model_id), results) if p.exists()]


def _part_names(vr: Any, arrays: Any, cfg: Any) -> list[str]:
    """The images a variant is scored on: the split (up to max_images), fewer for slow ones."""
    limit = cfg.evaluate.max_images or len(arrays.names)
    if vr.slow:
        limit = min(limit, cfg.evaluate.slow_variant_max_images)
    return list(arrays.names[:limit])


def _names_digest(names: list[str]) -> str:
    return hashlib.sha1("\n".join(names).encode()).hexdigest()


def write_individual_results(run: RunFolder, parts: list[Path], out: RunFolder | None = None):
    """Concatenate part files into out's model_performance_individual_results.csv.

    `out` defaults to `run` (whose trained_models_info.csv gives the study's columns).
    """
    frames = [read_csv(p, dtype={"image": str, "model_id": str}) for p in parts]
    frames = [f for f in frames if not f.empty]
    path = (out or run).individual_csv
    if not frames:
        write_csv(
            path, [], columns=[f for f in ImageResult.__dataclass_fields__ if f != "confusion"]
        )
        return path
    df = pd.concat(frames, ignore_index=True)
    df = with_study_columns(df, read_csv(run.trained_csv))
    df["Image_Name"] = df["image"]
    df["IoU_score"] = df["fg_iou"]
    df["Dice_score"] = df["fg_dice"]
    cm_cols, _ = confusion_columns(df)
    ordered = [c for c in df.columns if c not in cm_cols] + cm_cols
    with atomic_path(path) as tmp:
        df[ordered].to_csv(tmp, index=False)
    return path


# --- `unetq evaluate` --------------------------------------------------------------------------


def evaluate_command(
    run_dir: Path,
    split: str,
    data_dir: Path | None = None,
    fmt: str | None = None,
    name: str | None = None,
    progress: Any = None,
) -> tuple[Path, str | None]:
    """`unetq evaluate`: the run's own split, or (another --data-dir, or --name) every image of
    another dataset into cross/<name>/. Returns (individual CSV, cross name or None)."""
    run = RunFolder(run_dir)
    if not run.root.is_dir():
        raise ConfigError(f"run folder not found: {run.root}")
    cfg = run.load_config() if run.config.exists() else StudyConfig()
    if is_cross(run, cfg.data, data_dir, name):
        label = cross_name(name, data_dir)
        data = cross_data_config(cfg.data, data_dir, fmt)
        cfg = cfg.model_copy(update={"data": data})
        index = open_dataset(cfg.data, progress=progress)
        return evaluate_cross(run.root, index, label, cfg, progress=progress), label
    update: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
    if fmt is not None:
        update["format"] = fmt
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=update)})
    index = open_dataset(cfg.data, progress=progress)
    return evaluate_run(run.root, index, split, cfg, progress=progress), None


# --- cross-dataset: the run's models on another dataset with the same classes ------------------


def is_cross(run: RunFolder, run_data: Any, data_dir: Path | None, name: str | None) -> bool:
    """Cross mode: a --name, or a --data-dir other than the dataset the run was made with.

    The run's dataset is the root in its dataset.json, else its configured data.data_dir; when
    neither is known a --data-dir is taken as the run's own dataset (not cross).
    """
    if name:
        return True
    if data_dir is None:
        return False
    own = read_json(run.dataset).get("root") or getattr(run_data, "data_dir", None)
    if own is None:
        return False
    return not _same_path(own, data_dir)


def _same_path(a: Any, b: Any) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def cross_data_config(run_data: DataConfig, data_dir: Path | None, fmt: str | None) -> DataConfig:
    """The run's data config pointed at another dataset; its layout is detected unless given."""
    update: dict[str, Any] = {}
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"data folder not found: {folder}")
        update = {"source": "auto", "data_dir": folder, "format": fmt or detect_format(folder)}
    elif fmt is not None:
        update["format"] = fmt
    return run_data.model_copy(update=update)


def cross_name(name: str | None, data_dir: Path | None) -> str:
    """The folder name under run_dir/cross/: --name, else the data folder's name."""
    if not name:
        if data_dir is None:
            raise ConfigError("cross-dataset evaluation needs --data-dir or --name")
        name = Path(data_dir).expanduser().resolve().name
    if not CROSS_NAME_RE.match(name):
        raise ConfigError(
            f"cross-dataset name '{name}' must be letters, digits, '.', '_', '+' or '-' "
            "(it names a folder under <run>/cross/)"
        )
    return name


def check_cross_compatible(run: RunFolder, index: Any) -> None:
    """Same number of classes and same background class as the run's dataset (dataset.json).

    Without a dataset.json only the models' class count is checked (per predictor).
    """
    info = read_json(run.dataset)
    if "num_classes" not in info:
        return
    ours = (int(info["num_classes"]), int(info.get("background_class", -1)))
    theirs = (int(index.num_classes), int(index.background_class))
    if ours != theirs:
        raise DataError(
            f"{index.root} has {theirs[0]} classes with background class {theirs[1]} but the "
            f"run's dataset {info.get('root', run.root)} has {ours[0]} with background class "
            f"{ours[1]}: cross-dataset evaluation needs the same classes"
        )


def cross_dataset_info(index: Any, name: str, cfg: Any, run: RunFolder) -> dict[str, Any]:
    return {
        "name": name,
        "format": index.format,
        "root": str(index.root),
        "synthetic": bool(getattr(index, "synthetic", False)),
        "note": getattr(index, "note", ""),
        "num_classes": index.num_classes,
        "background_class": index.background_class,
        "class_names": list(getattr(index, "class_names", [])),
        "split": ALL_SPLIT,
        "images": len(index.pairs),
        "max_images": cfg.evaluate.max_images,
        "image_size": cfg.data.image_size,
        "skipped": len(getattr(index, "skipped", [])),
        "unmatched": len(getattr(index, "unmatched", [])),
        "run_dataset": read_json(run.dataset).get("root"),
    }


def evaluate_cross(run_dir: Path, index: Any, name: str, cfg: Any, progress: Any = None) -> Path:
    """Evaluate run_dir's models and variants on every image of another dataset (`index`).

    Writes run_dir/cross/<name>/: model_performance_individual_results.csv,
    model_performance_average_results.csv (accuracy per model, variant and runtime, with the
    study's columns) and dataset.json. Resumable: parts live in cross/<name>/.eval/. The
    dataset must have the run's classes (count and background class). Returns the individual
    CSV's path.
    """
    run = RunFolder(run_dir)
    name = cross_name(name, None)
    check_cross_compatible(run, index)
    out = run.cross(name)
    old = read_json(out.dataset)
    if old.get("root") and not _same_path(old["root"], index.root):
        raise ConfigError(
            f"{out.root} holds results for another dataset ({old['root']}); "
            "choose another --name or delete that folder"
        )
    if not run.model_ids():
        raise ModelError(f"no trained models in {run.models_dir}")
    write_json(out.dataset, cross_dataset_info(index, name, cfg, run))
    folder = out.root.relative_to(run.root).as_posix()
    path = run_stage(evaluate_stage(run, folder, index, ALL_SPLIT, cfg, progress), progress)
    write_accuracy_average(run, out, name)
    return path


def accuracy_summary(path: Path) -> pd.DataFrame:
    """The per-(model, variant, runtime) summary of an individual-results CSV."""
    return summarize(read_individual_results(path))
