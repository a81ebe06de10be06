"""`unetq models|train|compress`: model sizes, training a grid, compressing one model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unetq.cli.options import (
    ConfigOpt,
    DataDirOpt,
    FormatOpt,
    PresetOpt,
    SetOpt,
    needs_tensorflow,
)
from unetq.cli.output import Column, console, print_table, progress, say


def register(app: typer.Typer) -> None:
    for command in (models, train, compress):
        app.command()(command)


@needs_tensorflow
def models(
    arch: Annotated[str, typer.Option("--arch", help="Architecture: xception or classic.")] = (
        "xception"
    ),
    filters: Annotated[int, typer.Option("--filters", help="Base number of filters.")] = 32,
    size: Annotated[int, typer.Option("--size", help="Input image size in pixels.")] = 160,
    batchnorm: Annotated[bool, typer.Option("--batchnorm/--no-batchnorm")] = True,
    classes: Annotated[int, typer.Option("--classes", help="Number of classes.")] = 3,
) -> None:
    """Print a model's parameter count and multiply-adds per image."""
    from unetq.models import build_model, count_macs, count_params

    model = build_model(arch, filters, batchnorm, classes, size)
    norm = "batch norm" if batchnorm else "no batch norm"
    say(
        f"{arch} f={filters}, {norm}, {size}x{size}, {classes} classes: "
        f"{count_params(model):,} parameters, {count_macs(model) / 1e9:.2f} GMAC per image"
    )


@needs_tensorflow
def train(
    out: Annotated[Path, typer.Option("--out", help="Run folder (models/ and CSVs go here).")],
    preset: PresetOpt = "quick",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Train every model of the config's grid (resumable; finished models are skipped)."""
    from unetq.config import build_config
    from unetq.data import open_dataset
    from unetq.runfolder import RunFolder
    from unetq.runlock import own_run_folder
    from unetq.study import prepare_run_dir
    from unetq.train import train_grid

    cfg = build_config(preset, config, set_, {"data.format": fmt, "data.data_dir": data_dir})
    with own_run_folder(out), progress() as bars:
        prepare_run_dir(cfg, out)
        index = open_dataset(cfg.data, progress=bars)
        if index.synthetic:
            console.print(f"[bold yellow]SYNTHETIC DATA[/]: {index.note}")
        records = train_grid(cfg, index, None, out, bars)
    for r in records:
        flag = "  [bold red]COLLAPSED[/]" if r.collapsed else ""
        console.print(
            f"{r.model_id}: best epoch {r.best_epoch}/{r.epochs}, val_loss {r.best_val_loss:.4f}, "
            f"val fg IoU {r.val_fg_iou:.3f}, {r.seconds_per_epoch:.1f} s/epoch{flag}",
            highlight=False,
            soft_wrap=True,
        )
    say(f"wrote {RunFolder(out).trained_csv}")


COMPRESS_COLUMNS: list[Column] = [
    ("variant", "variant", None),
    ("made", "", None),
    ("size_mb", "size MB", 3),
    ("size_ratio_to_fp32", "ratio", 3),
    ("convert_seconds", "seconds", 1),
    ("agreement_pct", "agreement %", 2),
    ("max_abs_diff", "max diff", 4),
]


@needs_tensorflow(files=("model",))
def compress(
    model: Annotated[Path, typer.Option("--model", help="Keras segmentation model (.keras).")],
    variants: Annotated[
        str,
        typer.Option("--variants", help="all, or a comma list such as tflite-fp32,tflite-int8."),
    ] = "all",
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the variants (default: the model's).")
    ] = None,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", help="Images calibrating int8/int16x8.")
    ] = 100,
    verify_images: Annotated[
        int, typer.Option("--verify-images", help="Images checking each variant against Keras.")
    ] = 16,
    int8_io: Annotated[
        str, typer.Option("--int8-io", help="tflite-int8 input/output type: float32 or uint8.")
    ] = "float32",
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = "pets",
) -> None:
    """Convert a Keras segmentation model into TFLite variants and check each against it."""
    from unetq import compress as comp
    from unetq.fileio import record_dict

    cfg = comp.compress_config(variants, calibration_images, verify_images, int8_io)
    data = comp.data_config(data_dir, fmt, model) if data_dir is not None else None
    comp.model_input_hw(model)  # a bad model fails here, before the progress display
    warn = lambda text: console.print(f"[yellow]warning:[/] {text}", highlight=False)  # noqa: E731
    with progress(transient=True) as bars:
        records, csv_path = comp.run_compress(model, cfg.variants, out, cfg, data, bars, warn)
    rows = [
        {
            **record_dict(r),
            "size_mb": r.size_bytes / 1e6 if not r.error else None,
            "agreement_pct": 100 * r.agreement,
            "made": f"not made: {r.error}" if r.error else "made",
        }
        for r in records
    ]
    print_table(rows, COMPRESS_COLUMNS, "compressed variants")
    say(f"wrote {csv_path}")
    error = comp.failures_error(records)
    if error is not None:
        raise error
