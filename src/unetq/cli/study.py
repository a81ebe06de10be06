"""`unetq study|benchmark|report|show|predict`: the whole pipeline, its report, and the models
at work on single images."""

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
    batch_setting,
    needs_tensorflow,
)
from unetq.cli.output import console, print_summary, print_table, progress, say
from unetq.errors import UnetqError


def register(app: typer.Typer) -> None:
    for command in (study, benchmark, report, show, predict):
        app.command()(command)


def study(
    preset: PresetOpt = "quick",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<preset>).")] = None,
    set_: SetOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the units of work and their estimated cost; run nothing."
        ),
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            help="local, or ray: training, conversion and evaluation as tasks on a Ray cluster "
            "(needs unetq[ray])."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="The Ray cluster to join (auto, or HOST:6379); default: start one here."),
    ] = None,
    mlflow: Annotated[
        str | None,
        typer.Option(
            help="Log the study to this MLflow tracking URI, e.g. sqlite:///mlflow.db "
            "(needs unetq[mlflow])."
        ),
    ] = None,
) -> None:
    """Train the grid, compress every model, evaluate and benchmark every variant, report."""
    from unetq.config import build_config
    from unetq.runtimes import import_tensorflow
    from unetq.study import check_study, run_study

    cfg = build_config(preset, config, set_, {"data.data_dir": data_dir, "data.format": fmt})
    if not dry_run:  # a missing extra or a bad URI: one line before TensorFlow loads
        check_study(executor, ray_address, mlflow, cfg.cluster.connect_timeout_s)
    import_tensorflow()  # first, before OpenVINO or LiteRT (see options.needs_tensorflow)
    if dry_run:
        _print_plan(cfg)
        return
    run_dir = out or Path("runs") / preset
    report = run_study(cfg, run_dir, console, executor, ray_address, mlflow)
    print_summary(run_dir)
    console.print(f"[bold green]report:[/] {report}")


def _print_plan(cfg) -> None:
    from unetq.plan import hours, make_plan, plan_lines
    from unetq.runtimes import usable_cores

    with console.status("timing a few training steps on this machine"):
        plan = make_plan(cfg)
    columns = [
        ("run_id", "training run", None),
        ("gmacs", "GMAC / image", 2),
        ("epochs", "epochs", 0),
        ("images_per_epoch", "images / epoch", 0),
        ("estimate", "estimate", None),
    ]
    rows = [{**vars(unit), "estimate": hours(unit.seconds)} for unit in plan.training]
    print_table(rows, columns, f"unetq study --dry-run: {cfg.name}")
    for line in plan_lines(plan, usable_cores()):
        say(line)


def _conventions(options: dict):
    import dataclasses

    from unetq.conventions import Conventions

    return Conventions(**{f.name: options[f.name] for f in dataclasses.fields(Conventions)})


def _check_conventions(options: dict) -> None:
    from unetq.conventions import input_norm_from_flags

    input_norm_from_flags(_conventions(options))


@needs_tensorflow(files=("model",), check=_check_conventions)
def benchmark(
    model: Annotated[
        Path, typer.Option("--model", help="Your trained model (.keras, .h5, .onnx, .tflite).")
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Labelled images (without: speed, size, memory only)."),
    ] = None,
    fmt: FormatOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<model>).")] = None,
    variants: Annotated[
        str | None, typer.Option("--variants", help="Comma list (default: every variant).")
    ] = None,
    threads: Annotated[
        str | None, typer.Option("--threads", help="Comma list of counts or 'all' (1,all).")
    ] = None,
    input_norm: Annotated[
        str | None,
        typer.Option(
            "--input-norm",
            help="Pixels the model expects: unit [0,1], tf [-1,1], raw [0,255], imagenet (RGB "
            "mean/std), caffe (BGR minus mean). Default: from its Rescaling or Normalization "
            "layer, else unit.",
        ),
    ] = None,
    input_range: Annotated[
        str | None,
        typer.Option("--input-range", help="Older form of --input-norm: 0,1 / -1,1 / 0,255."),
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            "--mean", help="Per-channel mean R,G,B the model subtracts (0..1 or 0..255 units)."
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option("--std", help="Per-channel std R,G,B it divides by (units as --mean)."),
    ] = None,
    bgr: Annotated[
        bool, typer.Option("--bgr", help="The model takes BGR (with --mean/--std).")
    ] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            help="What its last layer gives: probabilities or logits (default: from its "
            "activation).",
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="One-channel (binary) head: foreground where p > this (0.5)."
        ),
    ] = None,
    tile_overlap: Annotated[
        int | None,
        typer.Option(
            "--tile-overlap",
            min=0,
            help="Evaluate whole images by overlapping tiles of the model's size (tile mode).",
        ),
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", min=16, help="Input size when the model's is not fixed.")
    ] = None,
    robustness: Annotated[
        bool, typer.Option("--robustness", help="Also measure image conditions.")
    ] = False,
    preset: Annotated[str, typer.Option(help="Settings to start from: quick or smoke.")] = "quick",
    set_: SetOpt = None,
) -> None:
    """Your own model through every variant: compress, evaluate, bench, report; no training."""
    from unetq.benchmark import run_benchmark
    from unetq.config import build_config
    from unetq.usermodel import model_id_for

    said = _conventions(locals())
    values = {
        "name": model_id_for(model),
        "compress.variants": variants.split(",") if variants else None,
        "bench.threads": [t.strip() for t in threads.split(",")] if threads else None,
        "robustness.enabled": robustness,
    }
    cfg = build_config(preset, None, set_, values)
    if tile_overlap is not None:  # checked against the model's input size, not the preset's
        tiles = {"mode": "tile", "tile_overlap": tile_overlap}
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=tiles)})
    run_dir = out or Path("runs") / model_id_for(model)
    report = run_benchmark(model, cfg, run_dir, data_dir, fmt, said, size, console)
    print_summary(run_dir)
    console.print(f"[bold green]report:[/] {report}")


def report(run: Annotated[Path, typer.Option(help="Run folder.")]) -> None:
    """Rebuild a run's HTML report from its CSVs; recomputes nothing."""
    from unetq.report import build_report
    from unetq.runfolder import RunFolder
    from unetq.runlock import own_run_folder

    RunFolder(run).load_config()  # a clear error when RUN is not a run folder
    with own_run_folder(run, create=False):
        console.print(f"report: {build_report(run)}")


@needs_tensorflow
def show(
    run: Annotated[Path, typer.Option(help="Run folder.")],
    image: Annotated[str | None, typer.Option(help="Test image name (default: the first).")] = None,
    model: Annotated[str | None, typer.Option(help="Model id (default: the last).")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG file to write.")] = None,
) -> None:
    """The single-image panel: input, truth, every variant's prediction and disagreement."""
    from unetq.report.panel import make_panel

    console.print(f"panel: {make_panel(run, image, model, out)}")


@needs_tensorflow(files=("model",), one_of=("model", "run"))
def predict(
    images: Annotated[Path, typer.Option(help="An image file or a folder of images.")],
    out: Annotated[Path, typer.Option(help="Folder for masks and overlays.")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="A Keras model (.keras), a .tflite, an OpenVINO .xml or an .onnx variant."
        ),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            help="Instead of --model: a benchmarked run folder; its recommended variant of the "
            "best model at every usable core (as `unetq recommend --threads all`)."
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="keras, litert, openvino or onnxruntime (default from the file)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Inference threads (default: every usable core).")
    ] = None,
    background: Annotated[
        int | None, typer.Option(help="Background class, not overlaid (default 0, or the run's).")
    ] = None,
    tile_overlap: Annotated[
        int | None,
        typer.Option(
            help="Segment each image at its own size by overlapping tiles of the model's input "
            "(pixels of overlap). Default: the study's own setting for a model of a tile-mode "
            "run folder, else resize to the model's input."
        ),
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            help="Images (tile mode: tiles) per model call, or 'async' for openvino's "
            "asynchronous requests. Default: the run's best setting for throughput with --run; "
            "else 8 for keras, 1 for the others.",
            callback=batch_setting,
        ),
    ] = None,
    overlays: Annotated[
        bool,
        typer.Option(
            "--overlays/--no-overlays",
            help="Also write <name>_overlay.png (writing them takes about as long as the model "
            "on 2 cores).",
        ),
    ] = True,
) -> None:
    """Segment your own images; writes mask PNGs at each image's size and overlays."""
    from unetq.predict import predict_images, recommended, run_tile_overlap
    from unetq.runtimes import Setting

    setting = Setting.parse(batch) if batch is not None else None  # checked by batch_setting
    if run is not None:
        chosen = recommended(run, threads)
        console.print(f"segmenting with {chosen.why}: {chosen.artifact}")
        model, runtime, threads = chosen.artifact, runtime or chosen.runtime, chosen.threads
        background = chosen.background_class if background is None else background
        tile_overlap = chosen.tile_overlap if tile_overlap is None else tile_overlap
        setting = setting or chosen.setting
    elif tile_overlap is None:
        tile_overlap = run_tile_overlap(model)
    with progress(transient=True, rate="images") as bars:
        result = predict_images(
            model,
            images,
            out,
            runtime,
            threads,
            background or 0,
            bars,
            tile_overlap,
            setting,
            overlays,
        )
    for path, reason in result.skipped:
        console.print(f"[yellow]skipped[/] {path}: {reason}")
    if result.median_ms is not None:
        how = "tiles" if tile_overlap is not None else "resize"
        console.print(
            f"{len(result.written)} images segmented into {out} in {result.seconds:.1f} s: "
            f"{result.images_per_s:.1f} images per s, reading and writing included; median "
            f"{result.median_ms:.1f} ms per image in {how} and model calls "
            f"({result.threads} thread(s))"
        )
    if not result.written:
        raise UnetqError(f"no readable images in {images}")
