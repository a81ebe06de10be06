"""Results: per-image accuracy rows, their summaries, and the merge with the benchmark's records.

`write_average_results` is the one place where accuracy (evaluate) and latency, memory and size
(bench) meet: model_performance_average_results.csv, one row per (model, variant, runtime,
threads), with the original study's columns in front. Both steps call it, in either order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetq.bench.machine import int8_limit_ms
from unetq.errors import DataError, UnetqError
from unetq.fileio import atomic_path
from unetq.metrics import dataset_scores
from unetq.records import ImageResult, ModelId
from unetq.runfolder import RunFolder, artifact_size, read_csv, read_json
from unetq.variants import original_rows, quantization_name, variant_rank

KEYS = ["model_id", "variant", "runtime"]
PER_IMAGE_METRICS = ["fg_iou", "fg_dice", "miou", "pixel_acc", "agreement", "seed_iou", "seed_dice"]
DATASET_METRICS = ["fg_iou_dataset", "fg_dice_dataset", "miou_dataset", "pixel_acc_dataset"]
SUMMARY_COLUMNS = [*KEYS, "split", "n_images", *PER_IMAGE_METRICS, "fg_iou_std", *DATASET_METRICS]
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
# The average CSV's study columns: the original notebook's names for the same quantities.
STUDY_MEASURES = ("Execution_time", "Memory_usage", "IoU_score", "Dice_score")


# --- per-image rows ----------------------------------------------------------------------------


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


def read_individual_results(path: Path) -> pd.DataFrame:
    """model_performance_individual_results.csv without its study-name aliases (empty if absent)."""
    frame = read_csv(Path(path), dtype={"image": str, "model_id": str})
    return frame.drop(columns=[c for c in STUDY_ALIASES if c in frame.columns])


# --- summaries ---------------------------------------------------------------------------------


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
    df = results if isinstance(results, pd.DataFrame) else pd.DataFrame(result_rows(results))
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
    identity = ModelId.parse(model_id)
    if identity is None:
        return {"Epoch": None, "Filters": None, "Normalization": None}
    return {
        "Epoch": identity.epochs,
        "Filters": identity.filters,
        "Normalization": _norm(identity.batchnorm),
    }


def _norm(batchnorm: bool) -> str:
    return "BatchNorm" if batchnorm else "NoBatchNorm"


def with_study_columns(df: pd.DataFrame, trained: pd.DataFrame | None = None) -> pd.DataFrame:
    """Prefix the original study's columns: Model, Epoch, Filters, Normalization, Quantization."""
    if df.empty:
        return df
    factors = {m: model_factors(m, trained) for m in df["model_id"].astype(str).unique()}
    front = pd.DataFrame(
        {
            "Model": df["model_id"],
            "Epoch": [factors[m]["Epoch"] for m in df["model_id"]],
            "Filters": [factors[m]["Filters"] for m in df["model_id"]],
            "Normalization": [factors[m]["Normalization"] for m in df["model_id"]],
            "Quantization": [quantization_name(v) for v in df["variant"]],
        },
        index=df.index,
    )
    rest = df.drop(columns=[c for c in front.columns if c in df.columns])
    return pd.concat([front, rest], axis=1)


def _with_study_measures(df: pd.DataFrame, timed: bool = True) -> pd.DataFrame:
    """Execution_time (s per image = median latency), Memory_usage (model MB), IoU_score and
    Dice_score (foreground IoU/Dice, the correct metric) after the five study columns, and
    their `Average_` copies at the end, as the original notebook's average CSV had them.
    Accuracy-only tables (`timed` False) get IoU_score and Dice_score only."""
    study = pd.DataFrame(
        {
            "Execution_time": df.get("latency_ms_median", np.nan) / 1000.0,
            "Memory_usage": df.get("model_memory_mb", np.nan),
            "IoU_score": df.get("fg_iou", np.nan),
            "Dice_score": df.get("fg_dice", np.nan),
        },
        index=df.index,
    )
    study = study[[c for c in STUDY_MEASURES if timed or c in ("IoU_score", "Dice_score")]]
    lead = 5 if "Model" in df else 0
    df = pd.concat([df.iloc[:, :lead], study, df.iloc[:, lead:]], axis=1)
    for col in study.columns:
        df[f"Average_{col}"] = df[col]
    return df


# --- the merge ---------------------------------------------------------------------------------


def read_bench_records(run: RunFolder) -> list[dict[str, Any]]:
    """BenchRecords (as dicts) of the run's part files, for models still in the run."""
    models = set(run.model_ids())
    rows = []
    for path in run.bench_parts():
        if path.parent.name not in models:
            continue
        record = read_json(path).get("record")
        if isinstance(record, dict):
            rows.append(record)
    return rows


def best_model_id(run: RunFolder) -> str | None:
    """The model whose keras variant has the highest mean fg IoU in the evaluation (the one
    `unetq recommend` speaks of); None before any evaluation."""
    frame = read_individual_results(run.individual_csv)
    if frame.empty or "fg_iou" not in frame:
        return None
    keras = frame[original_rows(frame) & frame["model_id"].isin(run.model_ids())]
    means = keras.groupby("model_id")["fg_iou"].mean().dropna()
    return str(means.idxmax()) if not means.empty else None


def read_throughput(run: RunFolder) -> pd.DataFrame:
    """ThroughputRecords of the run's part files (models still in the run), every setting, with
    `vs_keras`: images per second over keras' best setting at the same model and threads,
    paired round by round where they took turns in the same rounds."""
    models = set(run.model_ids())
    rows = [
        record
        for path in run.throughput_parts()
        if path.parent.name in models and isinstance(record := read_json(path).get("record"), dict)
    ]
    if not rows:
        return pd.DataFrame()
    tp = pd.DataFrame(rows)
    best = _best_settings(tp)
    keras = best[original_rows(best)]
    keras = {(r.model_id, r.threads): r for r in keras.itertuples()}
    ratios, lows, highs = [], [], []
    for r in tp.itertuples():
        k = keras.get((r.model_id, r.threads))
        ratio = interval = None
        if k is not None and r.session is not None and k.session == r.session:
            ratio = paired_ratio(k.ms_per_image_rounds, r.ms_per_image_rounds)
            interval = paired_ratio_interval(k.ms_per_image_rounds, r.ms_per_image_rounds)
        elif k is not None:
            ratio = r.images_per_s / k.images_per_s
        ratios.append(np.nan if ratio is None else ratio)
        lows.append(np.nan if interval is None else interval[0])
        highs.append(np.nan if interval is None else interval[1])
    return tp.assign(vs_keras=ratios, vs_keras_ci95_low=lows, vs_keras_ci95_high=highs)


def _best_settings(tp: pd.DataFrame) -> pd.DataFrame:
    """Per (model, variant, runtime, threads), the row of the setting with most images/s."""
    ok = tp[tp["images_per_s"].notna()]
    if ok.empty:
        return ok
    return ok.loc[ok.groupby([*KEYS, "threads"])["images_per_s"].idxmax()]


THROUGHPUT_COLUMNS = [
    "setting", "batch", "images_per_s", "images_per_s_ci95_low", "images_per_s_ci95_high",
    "vs_keras", "vs_keras_ci95_low", "vs_keras_ci95_high", "model_memory_mb",
]  # fmt: skip


def add_throughput(df: pd.DataFrame, tp: pd.DataFrame) -> pd.DataFrame:
    """The best setting of each (model, variant, runtime, threads) as `throughput_*` columns."""
    if tp.empty or "threads" not in df:
        return df
    best = _best_settings(tp)[[*KEYS, "threads", *THROUGHPUT_COLUMNS]]
    best = best.rename(columns={c: f"throughput_{c}" for c in THROUGHPUT_COLUMNS})
    best["threads"] = best["threads"].astype(float)
    # onto the latency rows: a figure at a thread count without latency stays in its own CSV
    return df.assign(threads=df["threads"].astype(float)).merge(
        best, on=[*KEYS, "threads"], how="left"
    )


def write_throughput_results(run: RunFolder, tp: pd.DataFrame) -> None:
    """throughput_results.csv: every measured setting, in the average CSV's row order."""
    if tp.empty:
        return
    tp = sort_rows(tp.drop(columns=["ms_per_image_rounds", "session"], errors="ignore"))
    with atomic_path(run.throughput_csv) as tmp:
        tp.to_csv(tmp, index=False)


def write_average_results(run_dir: Path) -> Path:
    """Merge accuracy (individual CSV) and bench parts into model_performance_average_results.csv.

    One row per (model, variant, runtime, threads), or per (model, variant, runtime) with empty
    bench columns when only accuracy exists. Callable after evaluate and bench in either order.
    """
    run = RunFolder(run_dir)
    frame = read_individual_results(run.individual_csv)
    acc = summarize(frame) if not frame.empty else pd.DataFrame()
    bench = pd.DataFrame(read_bench_records(run))
    if acc.empty and bench.empty:
        raise UnetqError(f"nothing to merge in {run.root}: run `unetq evaluate` or `unetq bench`")
    if bench.empty:
        df = acc.assign(threads=np.nan)
    elif acc.empty:
        df = bench
    else:
        df = bench.merge(acc, on=KEYS, how="outer")
    df = _fill_sizes(df, run)
    df = add_speedup(df)
    throughput = read_throughput(run)
    write_throughput_results(run, throughput)
    df = add_throughput(df, throughput)
    df = add_image_latency(df, read_json(run.dataset).get("tiles_per_image"))
    df = add_limits(df, run)
    df = sort_rows(df)
    df = with_study_columns(df.reset_index(drop=True), read_csv(run.trained_csv))
    df = _with_study_measures(df)
    with atomic_path(run.average_csv) as tmp:
        df.to_csv(tmp, index=False)
    return run.average_csv


def write_accuracy_average(run: RunFolder, out: RunFolder, dataset: str) -> Path:
    """out's average CSV from out's individual CSV alone (cross-dataset: no latency columns);
    model sizes and factors come from `run`, whose models they are."""
    acc = summarize(read_individual_results(out.individual_csv))
    acc["dataset"] = dataset
    acc = _fill_sizes(acc, run)
    df = _with_study_measures(with_study_columns(acc, read_csv(run.trained_csv)), timed=False)
    with atomic_path(out.average_csv) as tmp:
        df.to_csv(tmp, index=False)
    return out.average_csv


def bench_table(path: Path) -> pd.DataFrame:
    """The timed rows of an average CSV (`unetq bench` prints them), with `size_mb`."""
    df = pd.read_csv(path)
    df = df[df["threads"].notna()] if "threads" in df else df.iloc[0:0]
    return df.assign(size_mb=df["size_bytes"] / 1e6) if "size_bytes" in df else df


def add_limits(df: pd.DataFrame, run: RunFolder) -> pd.DataFrame:
    """limit_ms: the sum of a variant's per-layer bounds at that thread count (each model's
    layers.csv, unetq.inside); x_limit: the median over it; isa_int8_limit_ms: the earlier
    compute-only estimate (every multiply-add at the ISA's int8 peak, OS-reported clock)."""
    tables = [read_csv(run.layers(m)) for m in run.model_ids()]
    tables = [t for t in tables if not t.empty and "bound_ms" in t]
    if not tables or "threads" not in df or "latency_ms_median" not in df:
        return df
    layers = pd.concat(tables, ignore_index=True)
    layers = layers[layers["kind"] != "runtime"]
    keys = [*KEYS, "threads"]
    sums = layers.groupby(keys).agg(
        limit_ms=("bound_ms", lambda b: b.sum(min_count=len(b))), macs=("macs", "sum")
    )
    df = df.merge(sums.reset_index(), on=keys, how="left")
    df["x_limit"] = df["latency_ms_median"] / df["limit_ms"]
    machine = read_json(run.machine)
    isa = [int8_limit_ms(m, machine)[0] / t for m, t in zip(df["macs"], df["threads"], strict=True)]
    df["isa_int8_limit_ms"] = isa
    return df.drop(columns="macs")


def add_image_latency(df: pd.DataFrame, tiles_per_image: float | None) -> pd.DataFrame:
    """Tile mode: a whole image takes `tiles_per_image` timed tile calls on average, so its
    latency is the tile's median (and interval) times that; the stitching is not timed."""
    if tiles_per_image is None or "latency_ms_median" not in df:
        return df
    df["tiles_per_image"] = tiles_per_image
    for col in ("latency_ms_median", "latency_ms_median_ci95_low", "latency_ms_median_ci95_high"):
        if col in df:
            df[col.replace("latency_ms_median", "latency_ms_per_image")] = df[col] * tiles_per_image
    return df


def _fill_sizes(df: pd.DataFrame, run: RunFolder) -> pd.DataFrame:
    if "size_bytes" not in df:
        df["size_bytes"] = np.nan
    for i in df.index[df["size_bytes"].isna()]:
        try:
            path = run.artifact(str(df.at[i, "model_id"]), str(df.at[i, "variant"]))
            df.at[i, "size_bytes"] = artifact_size(path)
        except (OSError, UnetqError):  # artifact gone or variant unknown: leave it empty
            continue
    return df


def add_speedup(df: pd.DataFrame) -> pd.DataFrame:
    """Ratios to keras at the same model and thread count, and how sure each figure is
    ("keras" in these names is the model's original: for a user's ONNX / TFLite model, its file
    on its own runtime).

    speedup_vs_keras: keras' median latency / this row's. speedup_vs_keras_paired: the median
    over rounds of keras' round median / this row's round median, rounds being the turns of
    `bench.session.measure_interleaved`, a second or so apart: a slowdown of the machine that
    outlasts a round and hits both alike cancels out of each round's ratio (one that hits one
    runtime harder does not). NaN when the two were not measured in the same rounds (another
    bench run, or other settings). The `_ci95_low/_high` columns: see `latency_interval`.
    """
    rounds = df.pop("round_medians_ms").tolist() if "round_medians_ms" in df else None
    blocks = df.pop("round_samples_ms").tolist() if "round_samples_ms" in df else None
    sessions = df.pop("session").tolist() if "session" in df else [None] * len(df)
    if "latency_ms_median" not in df or "threads" not in df:
        return df
    is_keras = original_rows(df).to_numpy()
    keys = list(zip(df["model_id"], df["threads"], strict=True))
    ref = {k: i for i, k in reversed(list(enumerate(keys))) if is_keras[i]}
    median = df["latency_ms_median"].to_numpy(np.float64)
    keras_ms = np.array([median[ref[k]] if k in ref else np.nan for k in keys])
    df["speedup_vs_keras"] = keras_ms / median
    if rounds is not None:
        paired = [
            isinstance(sessions[i], str) and k in ref and sessions[ref[k]] == sessions[i]
            for i, k in enumerate(keys)
        ]
        df["speedup_vs_keras_paired"] = [
            paired_ratio(rounds[ref[k]], rounds[i]) if paired[i] else np.nan
            for i, k in enumerate(keys)
        ]
    if blocks is not None:
        intervals = [latency_interval(b) for b in blocks]
        df["latency_ms_median_ci95_low"] = [lo for lo, _ in intervals]
        df["latency_ms_median_ci95_high"] = [hi for _, hi in intervals]
        spread = [round_spread(r) for r in rounds] if rounds is not None else np.nan
        df["latency_round_spread"] = spread
    if rounds is not None:
        ratio_intervals = [
            paired_ratio_interval(rounds[ref[k]], rounds[i]) if paired[i] else (np.nan, np.nan)
            for i, k in enumerate(keys)
        ]
        df["speedup_vs_keras_paired_ci95_low"] = [lo for lo, _ in ratio_intervals]
        df["speedup_vs_keras_paired_ci95_high"] = [hi for _, hi in ratio_intervals]
    return df


BOOTSTRAP = 1000  # resamples; the intervals are 95% percentile intervals


def latency_interval(blocks: list | None, seed: int = 0) -> tuple[float, float]:
    """95% interval of the median latency, by a block bootstrap over rounds.

    Rounds are resampled, not single calls: the machine's slow and fast spells last seconds,
    so calls within a round are not independent, and resampling calls would give intervals
    too narrow to say whether two variants differ. Each resample draws as many rounds as were
    timed, with replacement, and takes the median of all their calls.
    """
    if not isinstance(blocks, list):
        return (np.nan, np.nan)
    blocks = [np.asarray(b, np.float64) for b in blocks if b]
    if len(blocks) < 2:
        return (np.nan, np.nan)
    width = max(len(b) for b in blocks)
    padded = np.full((len(blocks), width), np.nan)
    for i, block in enumerate(blocks):
        padded[i, : len(block)] = block
    picks = np.random.default_rng(seed).integers(0, len(blocks), (BOOTSTRAP, len(blocks)))
    medians = np.nanmedian(padded[picks].reshape(BOOTSTRAP, -1), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def paired_ratio_interval(reference: list | None, other: list | None, seed: int = 0):
    """95% interval of `paired_ratio`: the rounds' ratios resampled with replacement."""
    if not isinstance(reference, list) or not isinstance(other, list):
        return (np.nan, np.nan)
    if len(reference) != len(other):
        return (np.nan, np.nan)
    ratios = np.array([a / b for a, b in zip(reference, other, strict=True) if a and b])
    if len(ratios) < 2:
        return (np.nan, np.nan)
    picks = np.random.default_rng(seed).integers(0, len(ratios), (BOOTSTRAP, len(ratios)))
    medians = np.median(ratios[picks], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def round_spread(medians: list | None) -> float:
    """How much the machine's speed moved during a measurement: the slowest round's median over
    the fastest's, minus one (0.1 = 10%)."""
    if not isinstance(medians, list):
        return float("nan")
    values = [m for m in medians if m]
    return max(values) / min(values) - 1 if len(values) >= 2 else float("nan")


def paired_ratio(reference: list | None, other: list | None) -> float:
    """Median over rounds of reference / other (one median per round, None for a round without
    a block); NaN when the two lists are not of the same rounds or share no round."""
    if not isinstance(reference, list) or not isinstance(other, list):
        return float("nan")
    if len(reference) != len(other):
        return float("nan")
    ratios = [a / b for a, b in zip(reference, other, strict=True) if a and b]
    return float(np.median(ratios)) if ratios else float("nan")


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows by model, then variant in registry order, runtime and thread count."""
    df = df.assign(_rank=[variant_rank(v) for v in df["variant"]])
    by = ["model_id", "_rank", "runtime"] + (["threads"] if "threads" in df else [])
    return df.sort_values(by, kind="stable").drop(columns="_rank")
