"""Tables the report derives from the run's CSVs: the main table and the factor effects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from unetq.convert.mixed import LAYERS_TABLE as LAYERS
from unetq.metrics import bootstrap_ci
from unetq.records import ModelId
from unetq.results import KEYS
from unetq.runfolder import RunFolder, read_csv, read_json, sidecar_path, variant_report
from unetq.variants import is_original, variant_rank


@dataclass
class RunTables:
    """The run's CSVs as data frames (empty frames for files not written yet)."""

    average: pd.DataFrame
    individual: pd.DataFrame
    trained: pd.DataFrame
    compressed: pd.DataFrame
    robustness: pd.DataFrame


def load_tables(run_dir: Path) -> RunTables:
    run = RunFolder(run_dir)
    return RunTables(
        average=read_csv(run.average_csv),
        individual=read_csv(run.individual_csv),
        trained=read_csv(run.trained_csv),
        compressed=read_csv(run.compressed_csv),
        robustness=read_csv(run.robustness_csv),
    )


def with_model_factors(df: pd.DataFrame) -> pd.DataFrame:
    """Add arch/filters/batchnorm/epochs parsed from model ids like `xception-f32-bn-e50`."""
    if df.empty or "model_id" not in df:
        return df
    ids = [ModelId.parse(m) for m in df["model_id"]]
    out = df.copy()
    out["arch"] = [i.arch if i else None for i in ids]
    out["filters"] = pd.to_numeric([i.filters if i else None for i in ids], errors="coerce")
    out["batchnorm"] = [bool(i and i.batchnorm) for i in ids]
    out["epochs"] = pd.to_numeric([i.epochs if i else None for i in ids], errors="coerce")
    return out


def main_table(average: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, variant, runtime): size, accuracy, latency per thread count, memory."""
    if average.empty:
        return pd.DataFrame()
    df = average.copy()
    threads = sorted(int(t) for t in df["threads"].dropna().unique()) if "threads" in df else []
    # accuracy-only tables (e.g. cross-dataset results) have no threads column
    ordered = df.sort_values("threads") if "threads" in df else df
    first = ordered.groupby(KEYS, sort=False).first().reset_index()
    table = pd.DataFrame(
        {
            "model": first["model_id"],
            "variant": first["variant"],
            "runtime": first["runtime"],
            "precision": first.get("precision", ""),
            "size_mb": first.get("size_bytes", np.nan) / 1e6,
            "fg_iou": first.get("fg_iou", np.nan),
            "fg_dice": first.get("fg_dice", np.nan),
            "miou": first.get("miou", np.nan),
            "agreement": first.get("agreement", np.nan),
        }
    )
    keys = [tuple(k) for k in first[KEYS].itertuples(index=False)]

    def at(t: int, column: str) -> list:
        if column not in df:
            return [np.nan] * len(keys)
        sub = df[df["threads"] == t].set_index(KEYS)[column]
        return [sub.get(k, np.nan) for k in keys]

    for t in threads:
        table[f"ms_{t}t"] = at(t, "latency_ms_median")
        table[f"ms_{t}t_lo"] = at(t, "latency_ms_median_ci95_low")
        table[f"ms_{t}t_hi"] = at(t, "latency_ms_median_ci95_high")
    if "speedup_vs_keras_paired" in df:  # keras' time / this one's, paired round by round
        for t in threads:
            table[f"x_keras_{t}t"] = at(t, "speedup_vs_keras_paired")
            table[f"x_keras_{t}t_lo"] = at(t, "speedup_vs_keras_paired_ci95_low")
            table[f"x_keras_{t}t_hi"] = at(t, "speedup_vs_keras_paired_ci95_high")
    if "model_memory_mb" in first:
        table["model_mem_mb"] = first["model_memory_mb"]
    if "peak_rss_mb" in first:
        table["peak_rss_mb"] = first["peak_rss_mb"]
    rank = table["variant"].map(variant_rank)
    order = table.assign(_rank=rank).sort_values(["model", "_rank", "runtime"]).index
    return table.loc[order].reset_index(drop=True)


def latency_columns(table: pd.DataFrame) -> list[str]:
    """`ms_<N>t`: the median latency at each measured thread count."""
    return [c for c in table.columns if re.fullmatch(r"ms_\d+t", c)]


def speedup_columns(table: pd.DataFrame) -> list[str]:
    """`x_keras_<N>t`: the paired speed-up over keras at each measured thread count."""
    return [c for c in table.columns if re.fullmatch(r"x_keras_\d+t", c)]


def with_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """The main table for reading: each latency and speed-up as one cell `value (low-high)`,
    a (value, text) pair that sorts by the value; accuracy and size rounded; no _lo/_hi columns."""
    out = table.drop(columns=[c for c in table.columns if c.endswith(("_lo", "_hi"))])
    for col in latency_columns(out) + speedup_columns(out):
        lo, hi = table.get(f"{col}_lo"), table.get(f"{col}_hi")
        out[col] = [
            (v, _with_interval(v, a, b, 2))
            for v, a, b in zip(
                table[col],
                lo if lo is not None else [np.nan] * len(table),
                hi if hi is not None else [np.nan] * len(table),
                strict=True,
            )
        ]
    return out.drop(columns=[c for c in ("peak_rss_mb",) if c in out])


def _with_interval(value, low, high, digits: int) -> str:
    if value is None or value != value:
        return "–"
    if low != low or high != high:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def pareto_front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Boolean mask of points no other point beats on both lower latency and higher accuracy."""
    latency = np.asarray(latency, float)
    accuracy = np.asarray(accuracy, float)
    on_front = np.zeros(len(latency), bool)
    best = -np.inf
    for i in np.argsort(latency, kind="stable"):
        if np.isnan(latency[i]) or np.isnan(accuracy[i]):
            continue
        if accuracy[i] > best:
            on_front[i] = True
            best = accuracy[i]
    return on_front


def factor_effects(average: pd.DataFrame, threads: int = 1) -> pd.DataFrame:
    """The study's "Table 1", computed: mean paired change of each metric when one factor changes.

    Rows are compared only when every other factor is equal (paired design), at one thread count.
    """
    df = with_model_factors(average)
    if df.empty or "threads" not in df:
        return pd.DataFrame()
    df = df[df["threads"] == threads]
    metrics = {
        "latency_ms_median": "latency ms",
        "model_memory_mb": "memory MB",
        "fg_iou": "fg IoU",
        "fg_dice": "fg Dice",
    }
    metrics = {k: v for k, v in metrics.items() if k in df}
    model_factors = ["arch", "filters", "batchnorm", "epochs"]
    rows = []
    for factor in ["epochs", "filters", "batchnorm", "variant"]:
        levels = sorted(df[factor].dropna().unique(), key=str)
        if len(levels) < 2:
            continue
        if factor == "variant":
            base, same = next((v for v in levels if is_original(v)), "keras"), ["model_id"]
        else:
            base = False if factor == "batchnorm" else min(levels)
            same = [f for f in model_factors if f != factor] + ["variant", "runtime"]
        base_df = df[df[factor] == base]
        for level in levels:
            if level == base:
                continue
            pairs = df[df[factor] == level].merge(base_df, on=same, suffixes=("", "_base"))
            for metric, label in metrics.items():
                diffs = (pairs[metric] - pairs[f"{metric}_base"]).to_numpy(float)
                if not np.any(~np.isnan(diffs)):
                    continue
                lo, hi = bootstrap_ci(diffs)
                rows.append(
                    {
                        "factor": factor,
                        "change": f"{base} -> {level}",
                        "metric": label,
                        "mean_change": float(np.nanmean(diffs)),
                        "ci95_low": lo,
                        "ci95_high": hi,
                        "pairs": int(np.sum(~np.isnan(diffs))),
                    }
                )
    return pd.DataFrame(rows)


def quantization_penalties(robustness: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Largest fg IoU gaps between a quantized variant and keras under the same condition."""
    if robustness.empty:
        return pd.DataFrame()
    keys = ["model_id", "condition", "severity"]
    originals = robustness["variant"].map(is_original).astype(bool)
    ref = robustness[originals][keys + ["fg_iou"]]
    quant = robustness[~originals]
    merged = quant.merge(ref, on=keys, suffixes=("", "_keras"))
    merged["penalty"] = merged["fg_iou_keras"] - merged["fg_iou"]
    cols = keys + ["variant", "fg_iou_keras", "fg_iou", "penalty"]
    return merged.sort_values("penalty", ascending=False)[cols].head(top)


# The plain int8 variant each guarded variant keeps accuracy against (cost = the difference).
GUARDED = {"tflite-int8-mixed": "tflite-int8", "openvino-int8-guarded": "openvino-int8"}


def guard_table(run_dir: Path, average: pd.DataFrame) -> pd.DataFrame:
    """Per model and guarded variant: what the guard kept in float, the validation fg IoU it
    held against the float model, the drop it predicted from that (points) against the drop
    measured on the test images (against keras), and what it cost in ms at one thread against
    plain int8."""
    run = RunFolder(run_dir)
    one = average[average["threads"] == 1] if "threads" in average else average.iloc[0:0]
    ms = {(r.model_id, r.variant): r.latency_ms_median for r in one.itertuples()}
    fg = {(r.model_id, r.variant): getattr(r, "fg_iou", np.nan) for r in one.itertuples()}
    fg_original = {
        r.model_id: getattr(r, "fg_iou", np.nan) for r in one.itertuples() if is_original(r.variant)
    }
    rows = []
    for model_id in run.model_ids():
        for variant, plain in GUARDED.items():
            details = read_json(sidecar_path(run.artifact(model_id, variant))).get("details")
            if not details:
                continue
            kept = details.get("float_layers", details.get("float_operations", []))
            guarded_ms, plain_ms = ms.get((model_id, variant)), ms.get((model_id, plain))
            val_float, val = (
                details.get("validation_fg_iou_float"),
                details.get("validation_fg_iou"),
            )
            test_drop = fg_original.get(model_id, np.nan) - fg.get((model_id, variant), np.nan)
            rows.append(
                {
                    "model": model_id,
                    "variant": variant,
                    "versus": plain,
                    "kept_in_float": len(kept),
                    "float_layers": ", ".join(kept[:6]) + (" ..." if len(kept) > 6 else ""),
                    "val_fg_iou_float": val_float,
                    "val_fg_iou": val,
                    "budget_met": details.get("budget_met"),
                    "predicted_drop": _points(val_float, val),
                    "predicted_high": _points(details.get("predicted_drop_high")),
                    "test_drop": round(100 * test_drop, 2),
                    "ms_1t": guarded_ms,
                    "ms_1t_versus": plain_ms,
                    "cost_ms": (guarded_ms - plain_ms) if guarded_ms and plain_ms else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _points(before: float | None, after: float | None = 0.0) -> float:
    """An IoU difference (or a drop, without `after`) in points (0.01 IoU = 1 point), NaN when
    either side is missing (sidecars of older guards have no interval)."""
    if before is None or after is None:
        return np.nan
    return round(100 * (before - after), 2)


def int8_losses(average: pd.DataFrame, model_id: str, budget_points: float) -> list[dict]:
    """Plain int8 variants of `model_id` whose test fg IoU falls more than `budget_points` below
    keras', each with its guarded variant's drop (NaN when there is none)."""
    if average.empty or "fg_iou" not in average:
        return []
    rows = average[average["model_id"] == model_id].drop_duplicates(["variant", "runtime"])
    fg = dict(zip(rows["variant"], rows["fg_iou"], strict=True))
    original = rows[rows["variant"].map(is_original).astype(bool)]["fg_iou"]
    reference = float(original.iloc[0]) if len(original) else np.nan
    if not np.isfinite(reference):
        return []
    out = []
    for guarded, plain in GUARDED.items():
        drop = 100 * (reference - fg.get(plain, np.nan))
        if np.isfinite(drop) and drop > budget_points:
            kept = 100 * (reference - fg.get(guarded, np.nan))
            out.append({"plain": plain, "drop": drop, "guarded": guarded, "guarded_drop": kept})
    return out


def sensitivity_table(run_dir: Path, model_id: str, top: int = 12) -> pd.DataFrame:
    """The most sensitive layers of a model's tflite-int8-mixed search (RMSE / scale)."""
    path = variant_report(RunFolder(run_dir).model_dir(model_id), "tflite-int8-mixed", LAYERS)
    table = read_csv(path)
    return table.drop(columns=["tensor"], errors="ignore").head(top)
