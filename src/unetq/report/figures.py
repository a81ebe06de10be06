"""Report figures drawn with matplotlib; each returns PNG bytes, or None when there is no data."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from unetq.records import ModelId  # noqa: E402
from unetq.report.tables import pareto_front  # noqa: E402
from unetq.runfolder import RunFolder  # noqa: E402
from unetq.variants import variant_rank  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _label(row) -> str:
    """A variant's name says its runtime (tflite-* on LiteRT, openvino-* on OpenVINO)."""
    return str(row["variant"])


def accuracy_vs_latency(table: pd.DataFrame, latency_col: str, unit: str = "image") -> bytes | None:
    """fg IoU against median latency per (model, variant, runtime); Pareto front marked."""
    if table.empty or latency_col not in table or table["fg_iou"].isna().all():
        return None
    df = table.dropna(subset=[latency_col, "fg_iou"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    labels = df.apply(_label, axis=1)
    for i, label in enumerate(sorted(labels.unique(), key=_variant_key)):
        sel = labels == label
        ax.scatter(
            df.loc[sel, latency_col],
            df.loc[sel, "fg_iou"],
            label=label,
            s=36,
            color=plt.cm.tab10(i % 10),
            alpha=0.85,
        )
    front = pareto_front(df[latency_col].to_numpy(), df["fg_iou"].to_numpy())
    pts = df[front].sort_values(latency_col)
    ax.plot(pts[latency_col], pts["fg_iou"], "k--", lw=1, label="Pareto front")
    ax.scatter(pts[latency_col], pts["fg_iou"], s=110, facecolors="none", edgecolors="k")
    ax.set_xscale("log")
    ax.set_xlabel(f"median latency per {unit}, ms ({latency_col.removeprefix('ms_')}), log scale")
    ax.set_ylabel("foreground IoU (test)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def size_and_memory(table: pd.DataFrame) -> bytes | None:
    """Mean artifact size and measured model memory per variant (averaged over models)."""
    if table.empty:
        return None
    df = table.copy()
    df["label"] = df.apply(_label, axis=1)
    cols = [c for c in ("size_mb", "model_mem_mb") if c in df and df[c].notna().any()]
    if not cols:
        return None
    means = df.groupby("label")[cols].mean()
    means = means.loc[sorted(means.index, key=_variant_key)]
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.8), squeeze=False)
    titles = {
        "size_mb": "artifact size, MB",
        "model_mem_mb": "model memory (peak RSS - imports), MB",
    }
    for ax, col in zip(axes[0], cols, strict=True):
        ax.barh(means.index, means[col], color="#4c72b0")
        ax.set_title(titles[col], fontsize=10)
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
        for y, v in enumerate(means[col]):
            if np.isfinite(v):
                ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
    return _png(fig)


def training_curves(run_dir: Path) -> bytes | None:
    """Validation loss and fg IoU per epoch, for the longest horizon of each training run."""
    run = RunFolder(run_dir)
    histories: dict[str, pd.DataFrame] = {}
    for model_id in run.model_ids():
        identity = ModelId.parse(model_id)
        if not run.history(model_id).exists():
            continue
        run_id = identity.run_id if identity else model_id
        df = pd.read_csv(run.history(model_id))
        if run_id not in histories or len(df) > len(histories[run_id]):
            histories[run_id] = df
    if not histories:
        return None
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (run_id, df) in enumerate(sorted(histories.items())):
        color = plt.cm.tab10(i % 10)
        ax_loss.plot(df["epoch"], df["loss"], color=color, lw=1, alpha=0.5, ls=":")
        ax_loss.plot(df["epoch"], df["val_loss"], color=color, lw=1.5, label=run_id)
        if "val_fg_iou" in df:
            ax_iou.plot(df["epoch"], df["val_fg_iou"], color=color, lw=1.5, label=run_id)
    ax_loss.set_title("loss (dotted: train, solid: validation)", fontsize=10)
    ax_iou.set_title("validation foreground IoU", fontsize=10)
    for ax in (ax_loss, ax_iou):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_iou.legend(fontsize=7)
    return _png(fig)


def degradation_curves(robustness: pd.DataFrame) -> bytes | None:
    """fg IoU against severity per condition; float (keras) against each quantized variant."""
    if robustness.empty:
        return None
    clean = robustness[robustness["condition"] == "clean"]
    robustness = robustness[robustness["condition"] != "clean"]
    conditions = list(dict.fromkeys(robustness["condition"]))
    if not conditions:
        return None
    ncols = min(4, len(conditions))
    nrows = int(np.ceil(len(conditions) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.8 * nrows), squeeze=False)
    variants = sorted(robustness["variant"].unique(), key=_variant_key)
    for ax, condition in zip(axes.flat, conditions, strict=False):
        # every curve starts at severity 0: the clean images
        sub = pd.concat([clean, robustness[robustness["condition"] == condition]])
        for i, variant in enumerate(variants):
            curve = sub[sub["variant"] == variant].groupby("severity")["fg_iou"].mean()
            ax.plot(
                curve.index,
                curve.values,
                marker="o",
                ms=3,
                label=variant,
                color=plt.cm.tab10(i % 10),
                ls="-" if variant == "keras" else "--",
            )
        ax.set_title(condition, fontsize=9)
        ax.set_xlabel("severity (0 = clean)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(conditions) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("fg IoU")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def _variant_key(label: str) -> tuple[int, str]:
    base = label.split("@")[0]
    rank = variant_rank(base)
    return (rank, label)


def overview(table: pd.DataFrame, threads: int = 1) -> bytes | None:
    """Two heatmaps of model x variant: speed-up over keras at `threads` (paired round by round)
    and the change of fg IoU against keras in points; the whole study at a glance."""
    speed_col = f"x_keras_{threads}t"
    if table.empty or speed_col not in table or table["fg_iou"].isna().all():
        return None
    df = table.copy()
    df["label"] = df.apply(_label, axis=1)
    keras = df[df["variant"] == "keras"].set_index("model")["fg_iou"]
    df["iou_change"] = 100 * (df["fg_iou"] - df["model"].map(keras))
    speed = df.pivot_table(index="model", columns="label", values=speed_col, aggfunc="first")
    change = df.pivot_table(index="model", columns="label", values="iou_change", aggfunc="first")
    models = keras.sort_values(ascending=False).index.tolist()  # the best model on top
    labels = sorted((c for c in speed.columns if c != "keras"), key=_variant_key)
    speed = speed.reindex(index=models, columns=labels)
    change = change.reindex(index=models, columns=labels)
    height = 1.2 + 0.32 * len(models)
    fig, axes = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    panels = (
        (speed, f"speed-up over keras, {threads} thread(s)", "viridis", "{:.1f}x", None),
        (change, "fg IoU change against keras, points", "RdBu", "{:+.1f}", 2.0),
    )
    for ax, (values, title, cmap, fmt, limit) in zip(axes, panels, strict=True):
        data = values.to_numpy(float)
        vmin, vmax = (-limit, limit) if limit is not None else (None, None)
        image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
        for (r, c), value in np.ndenumerate(data):
            if np.isfinite(value):
                shade = image.norm(value)  # white text on the dark ends of the colour map
                dark = shade < 0.3 or (limit is not None and shade > 0.8)
                color = "white" if dark else "black"
                ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(models)), models, fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.03)
    return _png(fig)
