"""The decision: per model, the fastest variant and runtime within accuracy, latency, size budgets.

Read from a run's model_performance_average_results.csv (accuracy on the test split, latency at
one thread count, size on disk, memory). Accuracy is foreground IoU against the float keras
model of the same model, in points (0.5 = 0.005 IoU). `unetq recommend` prints it; the report's
first section uses the same function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import get_args

import pandas as pd

from unetq.config import Objective
from unetq.errors import UnetqError
from unetq.runfolder import RunFolder, read_csv, read_json
from unetq.variants import is_original, original_rows

DEFAULT_MAX_IOU_DROP = 0.5  # points of foreground IoU


OBJECTIVES = get_args(Objective)


@dataclass(frozen=True)
class Budgets:
    max_iou_drop: float = DEFAULT_MAX_IOU_DROP  # points of fg IoU below keras
    max_ms: float | None = None  # median latency per image at `threads` (throughput: ms per
    # image in the stream, 1000 / images per second)
    max_mb: float | None = None  # artifact size on disk (MB)
    threads: int = 1
    # latency: the shortest median time of one image alone; throughput: the most images per
    # second over a stream, each variant at its best setting (batch size, asynchronous requests)
    objective: str = "latency"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UnetqError(
                f"unknown objective '{self.objective}' (choose from {', '.join(OBJECTIVES)})"
            )

    @property
    def throughput(self) -> bool:
        return self.objective == "throughput"

    def describe(self) -> str:
        parts = [f"fg IoU at most {self.max_iou_drop:g} points below keras"]
        if self.max_ms is not None:
            parts.append(f"at most {self.max_ms:g} ms per image")
        if self.max_mb is not None:
            parts.append(f"at most {self.max_mb:g} MB")
        return f"{', '.join(parts)}, {self.threads} thread(s), for {self.objective}"


@dataclass(frozen=True)
class Candidate:
    """One variant on its runtime, as measured in the run, against the model's keras row."""

    model_id: str
    variant: str
    runtime: str
    precision: str
    latency_ms: float
    speedup: float  # keras' latency / this one's (paired round by round where measured so)
    size_mb: float
    size_ratio: float  # this size / keras' size
    memory_mb: float
    fg_iou: float
    iou_drop: float  # points below keras (negative: better than keras)
    images: int
    artifact: Path
    latency_ci: tuple[float, float] = (math.nan, math.nan)  # 95%, bootstrap over rounds
    speedup_ci: tuple[float, float] = (math.nan, math.nan)
    whole_ms: float = math.nan  # tile mode: mean ms per whole image timed end to end
    whole_tiles: float = math.nan  # the mean tile count of those images
    # objective throughput: the best setting ("batch 8", "async") and its images per second;
    # latency_ms is then 1000 / images_per_s and speedup is over keras' best setting
    setting: str = ""
    images_per_s: float = math.nan
    images_per_s_ci: tuple[float, float] = (math.nan, math.nan)

    def same_speed_as(self, other: Candidate) -> bool:
        """Whether the two medians' intervals overlap: the data cannot tell which is faster."""
        lo, hi = self.latency_ci
        other_lo, other_hi = other.latency_ci
        if any(math.isnan(v) for v in (lo, hi, other_lo, other_hi)):
            return self.latency_ms == other.latency_ms
        return lo <= other_hi and other_lo <= hi


@dataclass
class Recommendation:
    model_id: str
    keras: Candidate
    budgets: Budgets
    chosen: Candidate | None
    # every other candidate, fastest first, with the budget that rules it out ('' if it is
    # within budget but slower than the chosen one)
    others: list[tuple[Candidate, str]] = field(default_factory=list)
    # within budget and as fast as the chosen one within the noise (their latency intervals
    # overlap); the choice among them went to the smallest accuracy loss, then size
    tied: list[Candidate] = field(default_factory=list)
    # tile mode: latencies are per tile, and a whole test image takes this many tiles
    tiles_per_image: float | None = None


def recommend(
    run_dir: Path, budgets: Budgets, model_id: str | None = None, every_model: bool = False
) -> list[Recommendation]:
    """The recommendation for the best model (highest keras test fg IoU), `model_id`, or every
    model of the run."""
    run = RunFolder(run_dir)
    average = read_csv(run.average_csv)
    if average.empty or "latency_ms_median" not in average:
        raise UnetqError(f"{run.root} has no results yet: run `unetq bench` (and `evaluate`)")
    if "fg_iou" not in average:
        average = average.assign(fg_iou=float("nan"))
    models = _models(average, model_id, every_model, run)
    tiles = read_json(run.dataset).get("tiles_per_image")
    return [_recommend_one(run, average, m, budgets, tiles) for m in models]


def _models(average: pd.DataFrame, model_id: str | None, every: bool, run: RunFolder) -> list:
    keras = average[original_rows(average)]
    if keras["fg_iou"].notna().any():
        keras = keras.dropna(subset=["fg_iou"])
    known = list(dict.fromkeys(average["model_id"].astype(str)))
    if model_id is not None:
        if model_id not in known:
            raise UnetqError(f"no model '{model_id}' in {run.average_csv} ({', '.join(known)})")
        return [model_id]
    if every:
        return known
    if keras.empty:
        raise UnetqError(f"{run.average_csv} has no row of an original (keras) to compare with")
    return [str(keras.sort_values("fg_iou", ascending=False)["model_id"].iloc[0])]


def _recommend_one(
    run: RunFolder, average, model_id: str, budgets: Budgets, tiles: float | None
) -> Recommendation:
    rows = average[average["model_id"].astype(str) == model_id]
    if budgets.throughput:
        measured_col = "throughput_images_per_s"
        rows = rows[rows[measured_col].notna()] if measured_col in rows else rows.iloc[0:0]
    timed = rows[rows["threads"] == budgets.threads] if "threads" in rows else rows.iloc[0:0]
    if timed.empty:
        what = "throughput-measured" if budgets.throughput else "benchmarked"
        measured = sorted({int(t) for t in rows.get("threads", pd.Series()).dropna()})
        raise UnetqError(
            f"{model_id} was not {what} at {budgets.threads} thread(s) "
            f"(measured: {', '.join(map(str, measured)) or 'none'}; run `unetq bench`)"
        )
    keras_rows = timed[original_rows(timed)]
    if keras_rows.empty:
        raise UnetqError(
            f"{model_id} has no row of its original (keras) to compare with at {budgets.threads} t"
        )
    as_candidate = _throughput_candidate if budgets.throughput else _candidate
    keras = as_candidate(run, keras_rows.iloc[0], keras_rows.iloc[0])
    candidates = [as_candidate(run, row, keras_rows.iloc[0]) for _, row in timed.iterrows()]
    candidates = [c for c in candidates if not is_original(c.variant, c.runtime)]
    full = max((c.images for c in candidates), default=keras.images)
    ranked = sorted(candidates, key=lambda c: (math.isnan(c.latency_ms), c.latency_ms))
    measured = not math.isnan(keras.fg_iou)  # without a dataset: speed, size and memory only
    verdicts = [(c, _ruled_out(c, keras, budgets, full, measured)) for c in ranked]
    within = [c for c, reason in verdicts if not reason]
    if not within or keras.latency_ms <= within[0].latency_ms:
        others = [(c, reason) for c, reason in verdicts]
        # keras itself is fastest
        return Recommendation(model_id, keras, budgets, None, others, tiles_per_image=tiles)
    fastest = within[0]
    equal = [c for c in within if c is fastest or c.same_speed_as(fastest)]
    chosen = min(equal, key=lambda c: (c.iou_drop if measured else 0.0, c.size_mb))
    others = [(c, reason) for c, reason in verdicts if c is not chosen]
    tied = [c for c in equal if c is not chosen]
    return Recommendation(model_id, keras, budgets, chosen, others, tied, tiles)


def _ruled_out(c: Candidate, keras: Candidate, budgets: Budgets, full: int, measured: bool) -> str:
    """The first budget `c` breaks, in words; '' when it keeps them all."""
    if math.isnan(c.latency_ms):
        return "not timed"
    if measured and math.isnan(c.fg_iou):
        return "no accuracy measured"
    if measured and c.images < full:
        return f"accuracy from {c.images} of {full} test images only"
    if measured and c.iou_drop > budgets.max_iou_drop + 1e-9:
        below = f"{c.iou_drop:.2f} points below {keras.variant}"
        return f"accuracy: {below} > {budgets.max_iou_drop:g}"
    if budgets.max_ms is not None and c.latency_ms > budgets.max_ms:
        return f"latency: {c.latency_ms:.2f} ms > {budgets.max_ms:g}"
    if budgets.max_mb is not None and c.size_mb > budgets.max_mb:
        return f"size: {c.size_mb:.2f} MB > {budgets.max_mb:g}"
    return ""


def _candidate(run: RunFolder, row: pd.Series, keras: pd.Series) -> Candidate:
    paired = float(row.get("speedup_vs_keras_paired", math.nan))
    plain = float(row.get("speedup_vs_keras", math.nan))
    size = float(row.get("size_bytes", math.nan))
    return Candidate(
        model_id=str(row["model_id"]),
        variant=str(row["variant"]),
        runtime=str(row["runtime"]),
        precision=str(row.get("precision", "")),
        latency_ms=float(row.get("latency_ms_median", math.nan)),
        speedup=paired if not math.isnan(paired) else plain,
        size_mb=size / 1e6,
        size_ratio=size / float(keras.get("size_bytes", math.nan)),
        memory_mb=float(row.get("model_memory_mb", math.nan)),
        fg_iou=float(row["fg_iou"]),
        iou_drop=100 * (float(keras["fg_iou"]) - float(row["fg_iou"])),
        images=_count(row.get("n_images")),
        artifact=run.artifact(str(row["model_id"]), str(row["variant"])),
        latency_ci=(
            float(row.get("latency_ms_median_ci95_low", math.nan)),
            float(row.get("latency_ms_median_ci95_high", math.nan)),
        ),
        speedup_ci=(
            float(row.get("speedup_vs_keras_paired_ci95_low", math.nan)),
            float(row.get("speedup_vs_keras_paired_ci95_high", math.nan)),
        )
        if not math.isnan(paired)
        else (math.nan, math.nan),
        whole_ms=float(row.get("whole_image_ms_mean", math.nan)),
        whole_tiles=float(row.get("whole_image_tiles_mean", math.nan)),
    )


def _throughput_candidate(run: RunFolder, row: pd.Series, keras: pd.Series) -> Candidate:
    """A candidate ranked by images per second at its best setting: its "latency" is the ms per
    image of the stream, so the ranking and the ties work as for latency."""
    latency = _candidate(run, row, keras)
    ips = float(row["throughput_images_per_s"])
    low = float(row.get("throughput_images_per_s_ci95_low", math.nan))
    high = float(row.get("throughput_images_per_s_ci95_high", math.nan))
    ratio = float(row.get("throughput_vs_keras", math.nan))
    ratio_ci = (
        float(row.get("throughput_vs_keras_ci95_low", math.nan)),
        float(row.get("throughput_vs_keras_ci95_high", math.nan)),
    )
    return replace(
        latency,
        latency_ms=1000.0 / ips,
        latency_ci=(1000.0 / high, 1000.0 / low),
        speedup=ratio,
        speedup_ci=ratio_ci,
        memory_mb=float(row.get("throughput_model_memory_mb", math.nan)),
        whole_ms=math.nan,
        setting=str(row.get("throughput_setting", "")),
        images_per_s=ips,
        images_per_s_ci=(low, high),
    )


def _count(value) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(number) else int(number)


def summary_lines(rec: Recommendation) -> list[str]:
    """A few lines a reader can paste into a design review."""
    k, budgets = rec.keras, rec.budgets
    ref = k.variant  # keras, or a user's onnx / tflite file as given
    measured = not math.isnan(k.fg_iou)
    accuracy = f"{ref} fg IoU {k.fg_iou:.3f}" if measured else "accuracy not measured (no dataset)"
    tiled = rec.tiles_per_image is not None
    head = f"{rec.model_id}: {accuracy}, {_speed(k, tiled, budgets.throughput)}"
    if rec.chosen is None:
        return [head, f"no variant is faster than {ref} within the budgets ({budgets.describe()})"]
    c = rec.chosen
    cost = f"fg IoU {c.fg_iou:.3f} ({-c.iou_drop:+.2f} points)" if measured else "accuracy unknown"
    whole = "" if budgets.throughput else _whole_image(c, rec.tiles_per_image)
    lines = [
        head,
        f"ship {c.variant} on {c.runtime} ({c.precision}): {_speed(c, tiled, budgets.throughput)}"
        f"{whole} at {budgets.threads} thread(s), {_x(c)} {ref}; {c.size_mb:.2f} MB "
        f"({c.size_ratio:.2f}x {ref}); {c.memory_mb:.0f} MB memory ({ref} {k.memory_mb:.0f}); "
        f"{cost}",
    ]
    if rec.tied:
        speed = (lambda t: _ips(t, tiled)) if budgets.throughput else _ms
        names = ", ".join(f"{t.variant} on {t.runtime} ({speed(t)})" for t in rec.tied)
        lines.append(
            f"as fast within the noise: {names}; chosen for the smaller accuracy loss, then size"
        )
    lines.append(f"artifact: {c.artifact}")
    lines.append(
        f"budgets: {budgets.describe()}" + ("" if measured else " (accuracy budget not applied)")
    )
    return lines


def other_lines(rec: Recommendation) -> list[str]:
    """One line per other candidate, fastest first: its latency (or images per second and
    setting) and why it was not chosen."""
    if rec.budgets.throughput:
        unit = "images/s" if rec.tiles_per_image is None else "tiles/s"
        return [
            f"  {c.variant + ' on ' + c.runtime:36s} {c.images_per_s:8.1f} {unit} "
            f"({c.setting})  {_verdict(rec, c, reason)}"
            for c, reason in rec.others
        ]
    return [
        f"  {c.variant + ' on ' + c.runtime:36s} {c.latency_ms:8.2f} ms  {_verdict(rec, c, reason)}"
        for c, reason in rec.others
    ]


def _speed(c: Candidate, tiled: bool, throughput: bool) -> str:
    if throughput:
        return _ips(c, tiled)
    return f"{_ms(c)} {'per tile' if tiled else 'per image'}"


def _ips(c: Candidate, tiled: bool) -> str:
    """'812.3 images/s [95% 790.1-840.0] at batch 8' (tiles in tile mode)."""
    lo, hi = c.images_per_s_ci
    unit = "tiles/s" if tiled else "images/s"
    interval = "" if math.isnan(lo) or math.isnan(hi) else f" [95% {lo:.1f}-{hi:.1f}]"
    return f"{c.images_per_s:.1f} {unit}{interval} at {c.setting}"


def _verdict(rec: Recommendation, c: Candidate, reason: str) -> str:
    if reason:
        return reason
    if c in rec.tied:
        return "as fast within the noise, more accuracy loss or size"
    return "within budget, slower"


def _whole_image(c: Candidate, tiles: float | None) -> str:
    if tiles is None:
        return ""
    text = f" ({c.latency_ms * tiles:.1f} ms per whole test image of {tiles:.1f} tiles on average"
    if not math.isnan(c.whole_ms):
        text += (
            f"; timed end to end, with cutting and stitching: {c.whole_ms:.1f} ms for images of "
            f"{c.whole_tiles:.1f} tiles, against {c.latency_ms * c.whole_tiles:.1f} ms as tiles"
        )
    return text + ")"


def _x(c: Candidate) -> str:
    lo, hi = c.speedup_ci
    if math.isnan(lo) or math.isnan(hi):
        return f"{c.speedup:.2f}x"
    return f"{c.speedup:.2f}x [95% {lo:.2f}-{hi:.2f}]"


def _ms(c: Candidate) -> str:
    lo, hi = c.latency_ci
    if math.isnan(lo) or math.isnan(hi):
        return f"{c.latency_ms:.2f} ms"
    return f"{c.latency_ms:.2f} ms [95% {lo:.2f}-{hi:.2f}]"
