"""`unetq inspect`: a model layer by layer, where its time goes and how far from its limit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unetq.cli.output import Column, print_table, progress, say
from unetq.errors import UnetqError

# fits 120 columns
LAYER_COLUMNS: list[Column] = [
    ("layer", "layer", None),
    ("short_kind", "kind", None),
    ("block", "block", None),
    ("output_shape", "output", None),
    ("mmacs", "MMAC", 1),
    ("kb", "KB", 0),
    ("precision", "prec", None),
    ("time_ms", "ms", 3),
    ("bound_ms", "bound", 3),
    ("x_bound", "x", 1),
    ("error_pct", "err %", 1),
]
SHORT_KINDS = {
    "convolution": "conv",
    "separable convolution": "sep conv",
    "depthwise convolution": "dw conv",
    "transposed convolution": "transp conv",
    "normalization": "norm",
    "activation": "act",
    "upsampling": "upsample",
    "concatenate": "concat",
}


def register(app: typer.Typer) -> None:
    app.command()(inspect)


def inspect(
    model_dir: Annotated[
        Path | None, typer.Argument(help="A model folder of a run: RUN/models/ID.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="A Keras model of your own (.keras/.h5): its layers and bounds."
        ),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(help="Variant to show (default: the fastest one timed layer by layer)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Thread count (default: the smallest measured).")
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="Only the N slowest layers (0: all).")] = 0,
    every: Annotated[
        bool, typer.Option("--all", help="Also the layers fused into the one before (BN, ReLU).")
    ] = False,
) -> None:
    """Per layer: kind, block, shape, multiply-adds, bytes, time, bound and quantization error."""
    from unetq.inside.layers import FUSED_KINDS
    from unetq.inside.run import check_model_dir
    from unetq.inside.table import pick_rows, where_time_goes
    from unetq.runtimes import import_tensorflow  # first, before OpenVINO and LiteRT

    if (model_dir is None) == (model is None):
        raise typer.BadParameter("give a model folder RUN/models/ID or --model FILE, one of them")
    if model is not None:
        if not model.is_file():
            raise UnetqError(f"model file not found: {model}")
        import_tensorflow()
        rows, note = _keras_rows(model), "no variant: compress it with unetq benchmark --model"
    else:
        check_model_dir(model_dir)
        import_tensorflow()
        rows, note = _run_rows(model_dir)
    shown = pick_rows(rows, variant, threads)
    say(where_time_goes(shown))
    if note:
        say(f"note: {note}")
    first = shown[0]
    fused = [r for r in shown if r["kind"] in FUSED_KINDS]
    if not every:
        shown = [r for r in shown if r["kind"] not in FUSED_KINDS]
    if top:  # the slowest, or without times the longest bounds
        timed = any(r["time_ms"] == r["time_ms"] for r in shown)
        column = "time_ms" if timed else "bound_ms"
        shown = sorted(shown, key=lambda r: -(r[column] if r[column] == r[column] else 0))[:top]
    table = [
        {
            **r,
            "short_kind": SHORT_KINDS.get(r["kind"], r["kind"]),
            "mmacs": r["macs"] / 1e6,
            "kb": r["bytes"] / 1e3,
            "error_pct": 100 * r["error"],
        }
        for r in shown
    ]
    title = f"{first['model_id']} {first['variant']}, {first['threads']} thread(s)"
    caption = f"{len(fused)} layers fused into the one before not shown (--all)" if fused else None
    print_table(table, LAYER_COLUMNS, title, caption=None if every else caption)


def _run_rows(model_dir: Path) -> tuple[list[dict], str | None]:
    from unetq.inside.run import inspect_model_dir
    from unetq.runfolder import read_csv
    from unetq.runlock import own_run_folder

    run_root = Path(model_dir).resolve().parents[1]
    with own_run_folder(run_root, create=False), progress(transient=True) as bars:
        path, note = inspect_model_dir(model_dir, bars)
    return read_csv(path).to_dict("records"), note


def _keras_rows(model: Path) -> list[dict]:
    from unetq.bench.peaks import cached_peaks
    from unetq.inside.run import keras_rows

    with progress(transient=True) as bars:
        bars.add_task("measuring this machine's peaks", total=None)
        peaks = cached_peaks([1])
    return keras_rows(model, peaks)
