"""Accuracy: run every variant of every trained model over a split and score each image.

Per image: confusion matrix, fg IoU/Dice, mIoU, pixel accuracy, the original study's (flawed)
seed IoU/Dice, and agreement with the keras model's class map. `evaluate_run` is resumable:
each (model, variant, runtime) is a part file in `run_dir/.eval/<model_id>/`, written atomically;
a rerun skips parts that already hold exactly the expected images.

`evaluate_cross` runs the same machinery on every image (split 'all') of another dataset with
the run's classes and writes to `run_dir/cross/<name>/` (parts in its own `.eval/`).
"""

from __future__ import annotations

import gc
import importlib
import inspect
import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetq.errors import ConfigError, DataError, ModelError
from unetq.fileio import atomic_path, write_csv, write_json
from unetq.metrics import agreement as pixel_agreement
from unetq.metrics import confusion_matrix, dataset_scores, scores, seed_scores
from unetq.records import ImageResult

INDIVIDUAL_CSV = "model_performance_individual_results.csv"
AVERAGE_CSV = "model_performance_average_results.csv"
EVAL_DIR = ".eval"
CROSS_DIR = "cross"  # run_dir/cross/<name>/: a run's models evaluated on another dataset
CROSS_SPLIT = "all"  # in cross mode every image of the other dataset is a test image
KEYS = ["model_id", "variant", "runtime"]
PER_IMAGE_METRICS = [
    "fg_iou",
    "fg_dice",
    "miou",
    "pixel_acc",
    "agreement",
    "seed_iou",
    "seed_dice",
]
DATASET_METRICS = ["fg_iou_dataset", "fg_dice_dataset", "miou_dataset", "pixel_acc_dataset"]
SUMMARY_COLUMNS = [
    *KEYS,
    "split",
    "n_images",
    *PER_IMAGE_METRICS,
    "fg_iou_std",
    *DATASET_METRICS,
]
# Columns of the individual CSV that repeat others under the original study's names.
STUDY_ALIASES = (
    "Model",
    "Epoch",
    "Filters",
    "Normalization",
    "Quantization",
    "Image_Name",
    "IoU_score",
    "Dice_score",
)
CROSS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
MODEL_ID_RE = re.compile(r"^(?P<arch>.+)-f(?P<filters>\d+)-(?P<norm>bn|nobn)-e(?P<epochs>\d+)$")
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
        classes = np.asarray(predictor.predict(arrays.images[start:stop]))
        if classes.shape != arrays.masks[start:stop].shape:
            raise ModelError(
                f"{model_id} {variant} ({runtime}) returned class maps of shape "
                f"{classes.shape}, expected {arrays.masks[start:stop].shape}"
            )
        for offset, pred in enumerate(classes):
            i = start + offset
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
    elif reference is None and variant == "keras" and runtime == "keras":
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
    size = tuple(arrays.images.shape[1:3])
    hw = getattr(predictor, "input_hw", None)
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


# --- rows and summaries --------------------------------------------------------------------------


def result_rows(results: Iterable[ImageResult]) -> list[dict[str, Any]]:
    """ImageResults as flat CSV rows; the confusion matrix becomes columns cm_<true>_<pred>."""
    rows = []
    for r in results:
        row = asdict(r)
        confusion = row.pop("confusion")
        c = math.isqrt(len(confusion))
        for k, count in enumerate(confusion):
            row[f"cm_{k // c}_{k % c}"] = count
        rows.append(row)
    return rows


def results_frame(results: Iterable[ImageResult]) -> pd.DataFrame:
    return pd.DataFrame(result_rows(results))


def confusion_columns(df: pd.DataFrame) -> tuple[list[str], int]:
    """The cm_<t>_<p> columns of a results frame in row-major order, and the class count."""
    cells = []
    for col in df.columns:
        m = re.fullmatch(r"cm_(\d+)_(\d+)", str(col))
        if m:
            cells.append((int(m[1]), int(m[2]), col))
    c = max((max(t, p) for t, p, _ in cells), default=-1) + 1
    by_cell = {(t, p): col for t, p, col in cells}
    cols = [by_cell.get((t, p)) for t in range(c) for p in range(c)]
    if None in cols:
        raise DataError("results are missing confusion-matrix columns (cm_<true>_<pred>)")
    return cols, c


def summarize(
    results: list[ImageResult] | pd.DataFrame, background_class: int | None = None
) -> pd.DataFrame:
    """One row per (model, variant, runtime): per-image means and dataset-level scores.

    Per-image means (`fg_iou`, ...) weigh every image equally (nan entries are ignored, e.g.
    agreement without a keras reference); dataset-level scores (`*_dataset`) come from the
    confusion matrices summed over the images, so they weigh every pixel equally. `n_images`
    counts the images evaluated (fewer for slow variants). `results` may also be the data frame
    of model_performance_individual_results.csv; `background_class` defaults to its column.
    """
    df = results if isinstance(results, pd.DataFrame) else results_frame(results)
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    cm_cols, c = confusion_columns(df)
    rows = []
    for key, group in df.groupby(KEYS, sort=False):
        bg = background_class
        if bg is None:
            if "background_class" not in group or group["background_class"].isna().all():
                raise DataError("results do not say which class is background")
            bg = int(group["background_class"].dropna().iloc[0])
        row: dict[str, Any] = dict(zip(KEYS, key, strict=True))
        row["split"] = ",".join(sorted(set(group["split"].astype(str)))) if "split" in group else ""
        row["n_images"] = len(group)
        for metric in PER_IMAGE_METRICS:
            row[metric] = _nanmean(group[metric]) if metric in group else float("nan")
        row["fg_iou_std"] = float(group["fg_iou"].std(ddof=0))
        cm = group[cm_cols].fillna(0).to_numpy(np.int64).sum(axis=0).reshape(c, c)
        for name, value in dataset_scores(cm, bg).items():
            row[f"{name}_dataset"] = value
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _nanmean(values: pd.Series) -> float:
    arr = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    return float(np.nanmean(arr)) if np.any(~np.isnan(arr)) else float("nan")


# --- the study's columns -----------------------------------------------------------------------


def model_factors(model_id: str, trained: pd.DataFrame | None = None) -> dict[str, Any]:
    """Epoch, Filters, Normalization of a model: from trained_models_info.csv, else its id."""
    if trained is not None and not trained.empty and "model_id" in trained:
        match = trained[trained["model_id"].astype(str) == model_id]
        if not match.empty and {"epochs", "filters", "batchnorm"} <= set(match.columns):
            r = match.iloc[0]
            bn = str(r["batchnorm"]).strip().lower() in ("true", "1", "1.0")
            return {
                "Epoch": int(r["epochs"]),
                "Filters": int(r["filters"]),
                "Normalization": _norm(bn),
            }
    m = MODEL_ID_RE.match(model_id)
    if not m:
        return {"Epoch": None, "Filters": None, "Normalization": None}
    return {
        "Epoch": int(m["epochs"]),
        "Filters": int(m["filters"]),
        "Normalization": _norm(m["norm"] == "bn"),
    }


def _norm(batchnorm: bool) -> str:
    return "BatchNorm" if batchnorm else "NoBatchNorm"


def quantization_name(variant: str) -> str:
    """The study's name of a variant ('no', 'default', 'float16'), else the variant's name."""
    try:
        spec = _compress().VARIANTS.get(variant)
    except Exception:  # the registry is optional here: the name is a label only
        spec = None
    return (getattr(spec, "study_name", None) or variant) if spec is not None else variant


def with_study_columns(df: pd.DataFrame, trained: pd.DataFrame | None = None) -> pd.DataFrame:
    """Prefix the original study's columns: Model, Epoch, Filters, Normalization, Quantization."""
    if df.empty:
        return df
    factors = {m: model_factors(m, trained) for m in df["model_id"].astype(str).unique()}
    names = {v: quantization_name(v) for v in df["variant"].astype(str).unique()}
    front = pd.DataFrame(
        {
            "Model": df["model_id"],
            "Epoch": [factors[m]["Epoch"] for m in df["model_id"]],
            "Filters": [factors[m]["Filters"] for m in df["model_id"]],
            "Normalization": [factors[m]["Normalization"] for m in df["model_id"]],
            "Quantization": [names[v] for v in df["variant"]],
        },
        index=df.index,
    )
    rest = df.drop(columns=[c for c in front.columns if c in df.columns])
    return pd.concat([front, rest], axis=1)


# --- the whole run -----------------------------------------------------------------------------


def _compress():
    return importlib.import_module("unetq.compress")


def _runtimes():
    return importlib.import_module("unetq.runtimes")


def model_dirs(run_dir: Path) -> list[Path]:
    """Trained model folders of a run (models/<model_id>/), skipping dotted folders."""
    models = Path(run_dir) / "models"
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))


def artifact_for(model_dir: Path, variant: str) -> Path:
    compress = _compress()
    try:
        return Path(compress.artifact_path(model_dir, variant))
    except (AttributeError, TypeError, KeyError):  # registry wants the Variant object
        return Path(compress.artifact_path(model_dir, compress.VARIANTS[variant]))


def variant_runs(
    model_dir: Path, runtimes: Iterable[str] | None = None, openvino: bool = False
) -> list[tuple[str, str, Path, bool]]:
    """(variant, runtime, artifact, slow) for every variant artifact present, keras first.

    `runtimes` keeps only those runtimes (None = all); `openvino` adds OpenVINO on tflite-fp32.
    """
    keep = None if runtimes is None else set(runtimes)
    registry = _compress().VARIANTS
    names = sorted(registry, key=lambda v: v != "keras")  # stable: keras first, registry order
    runs = []
    for name in names:
        spec = registry[name]
        artifact = artifact_for(model_dir, name)
        if not artifact.exists():
            continue
        slow = bool(getattr(spec, "slow", False))
        if keep is None or spec.runtime in keep:
            runs.append((name, spec.runtime, artifact, slow))
        if openvino and name == "tflite-fp32" and (keep is None or "openvino" in keep):
            runs.append((name, "openvino", artifact, slow))
    return runs


def part_path(run_dir: Path, model_id: str, variant: str, runtime: str, default_runtime: str):
    """`.eval/<model_id>/<variant>.csv`, or `<variant>.<runtime>.csv` for an extra runtime."""
    stem = variant if runtime == default_runtime else f"{variant}.{runtime}"
    return Path(run_dir) / EVAL_DIR / model_id / f"{stem}.csv"


def _read_part(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path, dtype={"image": str, "model_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None


def _part_done(path: Path, names: list[str], artifact: Path) -> bool:
    """A part is finished if it holds exactly `names` and is newer than the model artifact."""
    part = _read_part(path)
    if part is None or "image" not in part or list(part["image"]) != names:
        return False
    return path.stat().st_mtime >= artifact.stat().st_mtime


def _reference_path(run_dir: Path, model_id: str) -> Path:
    return Path(run_dir) / EVAL_DIR / model_id / "keras_classes.npz"


def _save_reference(path: Path, maps: dict[str, np.ndarray]) -> None:
    names = list(maps)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, names=np.array(names), maps=np.stack([maps[n] for n in names]))


def _load_reference(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return dict(zip((str(n) for n in data["names"]), data["maps"], strict=True))
    except (OSError, ValueError, KeyError):
        return None


def _load_split(index, split: str, size: int, progress):
    from unetq.data import load_split

    kwargs = {}
    if "progress" in inspect.signature(load_split).parameters:
        kwargs["progress"] = progress
    arrays = load_split(index, split, size, **kwargs)
    if len(arrays.names) == 0:
        raise DataError(f"split '{split}' of {getattr(index, 'root', 'the dataset')} is empty")
    return arrays


def evaluate_run(run_dir: Path, index: Any, split: str, cfg: Any, progress: Any = None) -> Path:
    """Evaluate every variant of every model in run_dir on `split`; write the individual CSV.

    keras runs first (its class maps are the agreement reference, kept in
    `.eval/<model_id>/keras_classes.npz`); slow variants (int16x8) see only the first
    `cfg.evaluate.slow_variant_max_images` images. Also refreshes the average CSV
    (bench.write_average_results). Returns the individual CSV's path.
    """
    run_dir = Path(run_dir)
    parts = evaluate_parts(run_dir, run_dir, index, split, cfg, progress)
    path = write_individual_results(run_dir, parts)
    from unetq.bench import write_average_results

    write_average_results(run_dir)  # keep the merged table current whatever ran last
    return path


def evaluate_parts(
    run_dir: Path, out_dir: Path, index: Any, split: str, cfg: Any, progress: Any = None
) -> list[Path]:
    """Evaluate run_dir's models on `split` of `index`; parts go to out_dir/.eval/ (resumable).

    Returns the part files of every (model, variant, runtime), finished ones included.
    """
    from unetq.bench import usable_cores

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    dirs = model_dirs(run_dir)
    if not dirs:
        raise ModelError(f"no trained models in {run_dir / 'models'}")
    openvino = "openvino" in cfg.bench.runtimes
    registry = _compress().VARIANTS
    arrays = None
    parts: list[Path] = []
    for model_dir in dirs:
        model_id = model_dir.name
        runs = variant_runs(model_dir, openvino=openvino)
        has_keras = bool(runs) and runs[0][:2] == ("keras", "keras")
        ref_path = _reference_path(out_dir, model_id)
        reference: dict[str, np.ndarray] | None = None
        for variant, runtime, artifact, slow in runs:
            if arrays is None:  # read once, and only when some model has a variant
                arrays = _load_split(index, split, cfg.data.image_size, progress)
            limit = cfg.evaluate.max_images or len(arrays.names)
            if slow:
                limit = min(limit, cfg.evaluate.slow_variant_max_images)
            names = list(arrays.names[:limit])
            part = part_path(out_dir, model_id, variant, runtime, registry[variant].runtime)
            parts.append(part)
            is_reference = variant == "keras" and runtime == "keras"
            if _part_done(part, names, artifact):
                stored = _load_reference(ref_path) if is_reference else None
                if not is_reference or (stored is not None and set(names) <= set(stored)):
                    continue  # finished (the keras part also needs its stored class maps)
            if has_keras and not is_reference and reference is None:
                reference = _load_reference(ref_path)
            predictor = _runtimes().load_predictor(runtime, artifact, threads=usable_cores())
            produced: dict[str, np.ndarray] | None = {} if is_reference else None
            results = evaluate_predictor(
                predictor,
                arrays,
                model_id=model_id,
                variant=variant,
                split=split,
                background_class=index.background_class,
                num_classes=index.num_classes,
                reference=None if is_reference else reference,
                max_images=limit,
                progress=progress,
                predictions_out=produced,
            )
            del predictor
            gc.collect()
            if produced is not None:
                _save_reference(ref_path, produced)
                reference = produced
            write_csv(part, result_rows(results))
    return parts


def write_individual_results(run_dir: Path, parts: list[Path], out_dir: Path | None = None) -> Path:
    """Concatenate part files into out_dir/model_performance_individual_results.csv.

    out_dir defaults to run_dir (whose trained_models_info.csv gives the study's columns).
    """
    frames = [f for f in (_read_part(p) for p in parts) if f is not None and not f.empty]
    path = Path(out_dir if out_dir is not None else run_dir) / INDIVIDUAL_CSV
    if not frames:
        write_csv(
            path, [], columns=[f for f in ImageResult.__dataclass_fields__ if f != "confusion"]
        )
        return path
    df = pd.concat(frames, ignore_index=True)
    trained = _read_csv(Path(run_dir) / "trained_models_info.csv")
    df = with_study_columns(df, trained)
    df["Image_Name"] = df["image"]
    df["IoU_score"] = df["fg_iou"]
    df["Dice_score"] = df["fg_dice"]
    cm_cols, _ = confusion_columns(df)
    ordered = [c for c in df.columns if c not in cm_cols] + cm_cols
    with atomic_path(path) as tmp:
        df[ordered].to_csv(tmp, index=False)
    return path


# --- cross-dataset: the run's models on another dataset with the same classes ------------------


def run_dataset_info(run_dir: Path) -> dict[str, Any] | None:
    """The run's dataset.json (written by the study's data step), or None when absent."""
    path = Path(run_dir) / "dataset.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def is_cross(run_dir: Path, run_data: Any, data_dir: Path | None, name: str | None) -> bool:
    """Cross mode: a --name, or a --data-dir other than the dataset the run was made with.

    The run's dataset is the root in its dataset.json, else its configured data.data_dir; when
    neither is known a --data-dir is taken as the run's own dataset (not cross).
    """
    if name:
        return True
    if data_dir is None:
        return False
    info = run_dataset_info(run_dir) or {}
    own = info.get("root") or getattr(run_data, "data_dir", None)
    if own is None:
        return False
    return not _same_path(own, data_dir)


def _same_path(a: Any, b: Any) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def cross_data_config(run_data: Any, data_dir: Path | None, fmt: str | None) -> Any:
    """The run's data config pointed at another dataset; its layout is detected unless given."""
    update: dict[str, Any] = {}
    if data_dir is not None:
        from unetq.data import detect_format

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


def check_cross_compatible(run_dir: Path, index: Any) -> None:
    """Same number of classes and same background class as the run's dataset (dataset.json).

    Without a dataset.json only the models' class count is checked (per predictor).
    """
    info = run_dataset_info(run_dir)
    if info is None or "num_classes" not in info:
        return
    ours = (int(info["num_classes"]), int(info.get("background_class", -1)))
    theirs = (int(index.num_classes), int(index.background_class))
    if ours != theirs:
        raise DataError(
            f"{index.root} has {theirs[0]} classes with background class {theirs[1]} but the "
            f"run's dataset {info.get('root', run_dir)} has {ours[0]} with background class "
            f"{ours[1]}: cross-dataset evaluation needs the same classes"
        )


def cross_dataset_info(index: Any, name: str, cfg: Any, run_dir: Path) -> dict[str, Any]:
    run_info = run_dataset_info(run_dir) or {}
    return {
        "name": name,
        "format": index.format,
        "root": str(index.root),
        "synthetic": bool(getattr(index, "synthetic", False)),
        "note": getattr(index, "note", ""),
        "num_classes": index.num_classes,
        "background_class": index.background_class,
        "class_names": list(getattr(index, "class_names", [])),
        "split": CROSS_SPLIT,
        "images": len(index.pairs),
        "max_images": cfg.evaluate.max_images,
        "image_size": cfg.data.image_size,
        "skipped": len(getattr(index, "skipped", [])),
        "unmatched": len(getattr(index, "unmatched", [])),
        "run_dataset": run_info.get("root"),
    }


def evaluate_cross(run_dir: Path, index: Any, name: str, cfg: Any, progress: Any = None) -> Path:
    """Evaluate run_dir's models and variants on every image of another dataset (`index`).

    Writes run_dir/cross/<name>/: model_performance_individual_results.csv,
    model_performance_average_results.csv (accuracy per model, variant and runtime, with the
    study's columns) and dataset.json. Resumable: parts live in cross/<name>/.eval/. The
    dataset must have the run's classes (count and background class). Returns the individual
    CSV's path.
    """
    run_dir = Path(run_dir)
    name = cross_name(name, None)
    check_cross_compatible(run_dir, index)
    out_dir = run_dir / CROSS_DIR / name
    old = run_dataset_info(out_dir)
    if old and old.get("root") and not _same_path(old["root"], index.root):
        raise ConfigError(
            f"{out_dir} holds results for another dataset ({old['root']}); "
            "choose another --name or delete that folder"
        )
    if not model_dirs(run_dir):
        raise ModelError(f"no trained models in {run_dir / 'models'}")
    write_json(out_dir / "dataset.json", cross_dataset_info(index, name, cfg, run_dir))
    parts = evaluate_parts(run_dir, out_dir, index, CROSS_SPLIT, cfg, progress)
    path = write_individual_results(run_dir, parts, out_dir)
    write_cross_average(run_dir, out_dir, name)
    return path


def write_cross_average(run_dir: Path, out_dir: Path, name: str) -> Path:
    """out_dir/model_performance_average_results.csv: accuracy only, no latency columns."""
    acc = summarize(read_individual_results(Path(out_dir) / INDIVIDUAL_CSV))
    acc["dataset"] = name
    acc["size_bytes"] = [
        _artifact_size(Path(run_dir) / "models" / str(m), str(v))
        for m, v in zip(acc["model_id"], acc["variant"], strict=True)
    ]
    df = with_study_columns(acc, _read_csv(Path(run_dir) / "trained_models_info.csv"))
    study = pd.DataFrame(
        {"IoU_score": df.get("fg_iou"), "Dice_score": df.get("fg_dice")}, index=df.index
    )
    lead = 5 if "Model" in df else 0
    df = pd.concat([df.iloc[:, :lead], study, df.iloc[:, lead:]], axis=1)
    for col in ("IoU_score", "Dice_score"):
        df[f"Average_{col}"] = df[col]
    path = Path(out_dir) / AVERAGE_CSV
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def _artifact_size(model_dir: Path, variant: str) -> float:
    try:
        return float(artifact_for(model_dir, variant).stat().st_size)
    except (OSError, KeyError):
        return float("nan")


def read_individual_results(path: Path) -> pd.DataFrame:
    """model_performance_individual_results.csv without its study-name aliases (empty if absent)."""
    frame = _read_csv(Path(path), dtype={"image": str, "model_id": str})
    if frame is None:
        return pd.DataFrame()
    return frame.drop(columns=[c for c in STUDY_ALIASES if c in frame.columns])


def _read_csv(path: Path, **kwargs) -> pd.DataFrame | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
