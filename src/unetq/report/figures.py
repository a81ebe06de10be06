"""Report figures drawn with matplotlib; each returns PNG bytes, or None when there is no data."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from unetq.records import ModelId  # noqa: E402
from unetq.report import inside  # noqa: E402
from unetq.report.tables import pareto_front  # noqa: E402
from unetq.runfolder import RunFolder  # noqa: E402
from unetq.variants import is_original, variant_rank  # noqa: E402


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
                ls="-" if is_original(variant) else "--",
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
    originals = df["variant"].map(is_original).astype(bool)
    keras = df[originals].set_index("model")["fg_iou"]
    df["iou_change"] = 100 * (df["fg_iou"] - df["model"].map(keras))
    speed = df.pivot_table(index="model", columns="label", values=speed_col, aggfunc="first")
    change = df.pivot_table(index="model", columns="label", values="iou_change", aggfunc="first")
    models = keras.sort_values(ascending=False).index.tolist()  # the best model on top
    skip = set(df[originals]["label"])
    labels = sorted((c for c in speed.columns if c not in skip), key=_variant_key)
    speed = speed.reindex(index=models, columns=labels)
    change = change.reindex(index=models, columns=labels)
    # the rotated variant names and the titles take about 1.6 in; the rest is the heatmap's
    height = 1.6 + 0.32 * max(len(models), 2)
    fig, axes = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    ref = ", ".join(sorted(set(df[originals]["variant"]))) or "keras"  # a user's onnx / tflite
    panels = (
        (speed, f"speed-up over {ref}, {threads} thread(s)", "viridis", "{:.1f}x", None),
        (change, f"fg IoU change against {ref}, points", "RdBu", "{:+.1f}", 2.0),
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
        _colorbar(fig, image, ax, len(models))
    return _png(fig)


def _colorbar(fig, image, ax, rows: int) -> None:
    """A colour bar with as many ticks as its height holds (one model: three)."""
    bar = fig.colorbar(image, ax=ax, fraction=0.03)
    bar.locator = MaxNLocator(nbins=min(2 + rows, 6))
    bar.update_ticks()
    bar.ax.tick_params(labelsize=7)


# each part of the U in its own colour family, darker the deeper the block
ROLE_COLORS = {"encoder": "Blues", "bottleneck": "Purples", "decoder": "Oranges", "head": "Greens"}


def block_colors(blocks: list[str]) -> dict[str, tuple]:
    """One colour per block, shared by the U-Net drawing and the time per block."""
    roles: dict[str, list[str]] = {}
    for block in blocks:
        roles.setdefault(block.split(" ")[0], []).append(block)
    colors = {}
    for role, members in roles.items():
        cmap = plt.get_cmap(ROLE_COLORS.get(role, "Greys"))
        for i, block in enumerate(members):
            colors[block] = cmap(0.45 + 0.35 * i / max(len(members) - 1, 1))
    return colors


def unet(
    blocks: list[tuple[str, str]], skips: list[tuple[str, str]], colors: dict | None = None
) -> bytes | None:
    """The U-Net as its blocks, left to right in the order they run: each a box one level
    lower per halving of the resolution, its height in proportion to the resolution, labelled
    with its name and output shape; long skip connections as dashed arrows."""
    sizes = [inside.resolution(shape) for _, shape in blocks]
    if not blocks or not all(sizes):
        return None
    top = max(sizes)
    levels = [np.log2(top / s) for s in sizes]
    colors = colors or block_colors([b for b, _ in blocks])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.05 * len(blocks)), 1.4 + 0.6 * max(levels)))
    boxes = {}
    for i, ((block, shape), size, level) in enumerate(zip(blocks, sizes, levels, strict=True)):
        height = 0.2 + 0.55 * size / top
        ax.add_patch(
            plt.Rectangle((i - 0.42, -level - height / 2), 0.84, height, color=colors[block])
        )
        ax.text(
            i, -level - height / 2 - 0.06, f"{block}\n{shape}", ha="center", va="top", fontsize=7
        )
        boxes[block] = (i, -level)
        if i:
            _arrow(ax, (i - 0.58, -levels[i - 1]), (i - 0.42, -level), "-|>", "#555")
    for encoder, decoder in skips:
        (x0, y), (x1, _) = boxes[encoder], boxes[decoder]
        _arrow(ax, (x0 + 0.42, y), (x1 - 0.42, y), "-|>", "#888", dashed=True)
    ax.set_xlim(-0.6, len(blocks) - 0.4)
    ax.set_ylim(-max(levels) - 0.9, 0.6)
    ax.axis("off")
    return _png(fig)


def _arrow(ax, start, end, style: str, color: str, dashed: bool = False) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={"arrowstyle": style, "color": color, "lw": 1, "ls": "--" if dashed else "-"},
    )


def time_per_block(
    times: pd.DataFrame, calls: pd.Series, colors: dict | None = None
) -> bytes | None:
    """One bar per variant, its layers' times stacked block by block in the U-Net's order, and
    the measured time of the whole call marked: the parts against the whole."""
    if times.empty:
        return None
    colors = colors or block_colors(list(times.columns))
    legend_rows = int(np.ceil(len(times.columns) / 5))
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.45 * len(times) + 0.2 * legend_rows))
    left = np.zeros(len(times))
    rows = np.arange(len(times))
    for block in times.columns:
        ax.barh(rows, times[block], left=left, height=0.6, color=colors.get(block), label=block)
        left += times[block].to_numpy(float)
    ax.scatter(calls, rows, marker="|", s=500, color="black", zorder=3)
    for y, (total, call) in enumerate(zip(left, calls, strict=True)):
        if np.isfinite(call):
            text = f"  layers {total:.2f} ms, call {call:.2f} ms"
            ax.text(max(total, call), y, text, va="center", fontsize=8)
    ax.set_yticks(rows, times.index, fontsize=8)
    ax.set_ylim(len(times) - 0.5, -0.5)
    ax.set_xlim(0, 1.3 * np.nanmax([left.max(), np.nanmax(calls.to_numpy(float))]))
    ax.set_xlabel("ms per call: each layer's measured time, stacked by block; |: the whole call")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _png(fig)


# the factor effects' metrics as drawn: label in factor_effects -> (title, scale)
EFFECT_METRICS = {
    "fg IoU": ("fg IoU, points", 100.0),
    "latency ms": ("latency, ms (1 thread)", 1.0),
    "memory MB": ("model memory, MB", 1.0),
}


def factor_effects(effects: pd.DataFrame) -> bytes | None:
    """The study's own analysis: per factor level, the mean paired change of each metric with
    its 95% interval; one panel per metric, the levels on a shared axis."""
    if effects.empty:
        return None
    metrics = [m for m in EFFECT_METRICS if m in set(effects["metric"])]
    levels = _effect_levels(effects)
    if not metrics or not levels:
        return None
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(11, 1.2 + 0.28 * len(levels)), sharey=True, squeeze=False
    )
    factors = list(dict.fromkeys(f for f, _ in levels))
    for ax, metric in zip(axes[0], metrics, strict=True):
        title, scale = EFFECT_METRICS[metric]
        rows = effects[effects["metric"] == metric].set_index(["factor", "change"])
        for y, key in enumerate(levels):
            if key not in rows.index:
                continue
            row = rows.loc[key]
            mean, lo, hi = (scale * row[c] for c in ("mean_change", "ci95_low", "ci95_high"))
            err = [[mean - lo], [hi - mean]] if np.isfinite(lo) and np.isfinite(hi) else None
            color = plt.cm.tab10(factors.index(key[0]) % 10)
            ax.errorbar(mean, y, xerr=err, fmt="o", ms=4, color=color, capsize=2, lw=1)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
        for y, (before, after) in enumerate(zip(levels, levels[1:], strict=False)):
            if before[0] != after[0]:
                ax.axhline(y + 0.5, color="#ccc", lw=0.8)
    labels = [f"{factor}: {change.replace(' -> ', ' → ')}" for factor, change in levels]
    axes[0][0].set_yticks(range(len(levels)), labels, fontsize=8)
    axes[0][0].invert_yaxis()
    return _png(fig)


def _effect_levels(effects: pd.DataFrame) -> list[tuple[str, str]]:
    """(factor, change) rows in the table's order, the variants in the registry's."""
    keys = list(dict.fromkeys(zip(effects["factor"], effects["change"], strict=True)))
    variants = sorted(
        (k for k in keys if k[0] == "variant"), key=lambda k: variant_rank(k[1].split(" -> ")[-1])
    )
    return [k for k in keys if k[0] != "variant"] + variants
