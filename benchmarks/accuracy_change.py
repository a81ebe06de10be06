"""Did a change make any variant lose more accuracy? Two run folders with the same trained
models (a copy of a run, compressed and evaluated again by other code), compared image by image.

    python benchmarks/accuracy_change.py runs/before runs/after
    python benchmarks/accuracy_change.py runs/before runs/after --metric miou --models best

For every (model, variant) evaluated in both: the test metric's loss against keras before and
after (points), and the change of that loss (after - before) with its 95% bootstrap interval
over the test images, paired by image. A change whose interval holds 0 is within what the test
images can tell apart. Keras must score the same in both folders (the same models).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from unetq.metrics import bootstrap_ci
from unetq.runfolder import RunFolder
from unetq.variants import variant_rank

KEY = ["model_id", "variant", "image"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path, help="run folder evaluated by the old code")
    p.add_argument("after", type=Path, help="run folder evaluated by the new code")
    p.add_argument("--metric", default="fg_iou", help="per-image metric column (fg_iou, miou)")
    p.add_argument(
        "--models", default=None, help="comma list of model ids, or 'best' (default: all)"
    )
    return p.parse_args(argv)


def per_image(run: Path, metric: str) -> pd.DataFrame:
    frame = pd.read_csv(RunFolder(run).individual_csv, dtype={"model_id": str, "image": str})
    frame = frame[frame["split"] == "test"]
    return frame.groupby(KEY, as_index=False)[metric].mean()


def best_model(frame: pd.DataFrame, metric: str) -> str:
    keras = frame[frame["variant"] == "keras"]
    return str(keras.groupby("model_id")[metric].mean().idxmax())


def changes(before: pd.DataFrame, after: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (model, variant): loss against keras before and after, and the change."""
    both = before.merge(after, on=KEY, suffixes=("_before", "_after"))
    keras = both[both["variant"] == "keras"]
    if keras.empty:
        raise SystemExit("no keras test results in both folders for the same images")
    moved = (keras[f"{metric}_before"] - keras[f"{metric}_after"]).abs().max()
    if moved > 1e-6:
        raise SystemExit(f"keras scores differ by up to {moved:.4f}: not the same models")
    keras = keras.set_index(["model_id", "image"])[f"{metric}_before"]
    rows = []
    for (model, variant), group in both[both["variant"] != "keras"].groupby(KEY[:2]):
        reference = keras.loc[[(model, i) for i in group["image"]]].to_numpy()
        old, new = group[f"{metric}_before"].to_numpy(), group[f"{metric}_after"].to_numpy()
        low, high = bootstrap_ci(old - new)  # after's loss minus before's, per image
        rows.append(
            {
                "model_id": model,
                "variant": variant,
                "images": len(group),
                "loss_before": 100 * np.nanmean(reference - old),
                "loss_after": 100 * np.nanmean(reference - new),
                "change": 100 * np.nanmean(old - new),
                "change_low": 100 * low,
                "change_high": 100 * high,
            }
        )
    out = pd.DataFrame(rows)
    out["rank"] = out["variant"].map(variant_rank)
    return out.sort_values(["model_id", "rank"]).drop(columns="rank")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    before, after = per_image(args.before, args.metric), per_image(args.after, args.metric)
    if args.models == "best":
        models = [best_model(after, args.metric)]
    else:
        models = args.models.split(",") if args.models else sorted(set(after["model_id"]))
    before = before[before["model_id"].isin(models)]
    after = after[after["model_id"].isin(models)]
    table = Table(title=f"test {args.metric} loss against keras (points), before -> after")
    for column in ("model", "variant", "images", "before", "after", "change", "95% interval"):
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    worse = 0
    for row in changes(before, after, args.metric).itertuples():
        interval = f"[{row.change_low:+.2f}, {row.change_high:+.2f}]"
        if np.isfinite(row.change_low) and row.change_low > 0:
            worse += 1
            interval += " worse"
        table.add_row(
            row.model_id,
            row.variant,
            str(row.images),
            f"{row.loss_before:+.2f}",
            f"{row.loss_after:+.2f}",
            f"{row.change:+.2f}",
            interval,
        )
    Console(width=150).print(table)
    print(f"{worse} (model, variant) lose more with the change beyond the test images' noise")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
