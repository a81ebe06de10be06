"""The `unetq` command line: parse, call the stage modules, print. No logic lives here."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from unetq.errors import Interrupted, UnetqError, storage_error

# TensorFlow's C++ chatter (grappler remapper notes, cpu features) and its Python retracing
# warnings are not for our users; real failures still raise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
logging.getLogger("tensorflow").setLevel(logging.ERROR)

app = typer.Typer(
    help="Train U-Net segmentation models, quantize them, and measure the trade-offs on CPUs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Get and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

# Commands that never load TensorFlow in this process (bench measures in child processes).
NO_TENSORFLOW = {None, "data", "bench"}


@app.callback()
def _startup(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand not in NO_TENSORFLOW:
        from unetq.runtimes import import_tensorflow

        import_tensorflow()


DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Dataset folder (default: $UNETQ_DATA_DIR, then the cache)."),
]
FormatOpt = Annotated[str, typer.Option("--format", help="Dataset layout: pets or folder.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: section.key=value.")
]


# --- data commands ---


def _data_progress(download: bool = False):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counter = [DownloadColumn(), TransferSpeedColumn()] if download else [MofNCompleteColumn()]
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *counter,
        TimeRemainingColumn(),
        console=console,
    )


def _data_say(text: str, style: str | None = None) -> None:
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


@data_app.command("fetch")
def data_fetch(
    dest: Annotated[
        Path | None, typer.Option("--dest", help="Extract here (default: the unetq cache folder).")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Download Oxford-IIIT Pet (MD5-checked, resumable, safe extraction) unless a copy exists."""
    from unetq.data import fetch

    local = fetch.local_copy(data_dir)
    if local is not None:
        _data_say(f"using the local copy at {local[0]} (from {local[1]}); nothing downloaded")
        return
    target = dest or fetch.pets_cache_root()
    if fetch.is_complete(target):
        _data_say(f"already downloaded: {target}")
        return
    with _data_progress(download=True) as progress:
        path = fetch.fetch_pets(dest, progress=progress)
    _data_say(f"Oxford-IIIT Pet ready at {path}")


@data_app.command("check")
def data_check(
    data_dir: DataDirOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Dataset layout: pets, folder or auto (detect).")
    ] = "auto",
    size: Annotated[
        int, typer.Option("--size", help="Also cache the splits resized to N px (0: don't).")
    ] = 160,
    split: Annotated[str, typer.Option("--split", help="Split procedure: seed or official.")] = (
        "seed"
    ),
) -> None:
    """Decode every image and mask of a dataset and report what it holds; exit 0 when usable."""
    from unetq.data.check import check_folder, problems_error, skipped_by_reason

    with _data_progress() as progress:
        index, report, cfg = check_folder(data_dir, fmt, size, split, progress)
    _data_say(f"{index.note} (format {index.format})", style="bold")
    _data_say(f"pairs found: {len(index.pairs)}")
    _data_say(f"files skipped: {len(index.skipped)}")
    for reason, count, names in skipped_by_reason(index):
        more = ", ..." if count > len(names) else ""
        _data_say(f"  {count} {reason}: {', '.join(names)}{more}")
    _data_say(f"unmatched files (no partner): {len(index.unmatched)}")
    for path in index.unmatched[:5]:
        _data_say(f"  {path}")
    if index.lists:
        _data_say(f"official lists: {', '.join(f'{k} {len(v)}' for k, v in index.lists.items())}")
    sizes = " / ".join(f"{k} {len(v)}" for k, v in index.splits.items())
    _data_say(f"split '{cfg.split}' (seed {cfg.split_seed}): {sizes}")
    if index.unsplit_names():
        _data_say(f"pairs in no split: {len(index.unsplit_names())}")
    shares = ", ".join(
        f"{name} {share:.1%}"
        for name, share in zip(index.class_names, report.class_shares, strict=True)
    )
    background = index.class_names[index.background_class]
    _data_say(f"classes ({index.num_classes}, background = {background}): {shares}")
    if report.min_size:
        (w0, h0), (w1, h1) = report.min_size, report.max_size
        _data_say(f"image sizes: {w0}x{h0} (smallest) to {w1}x{h1} (largest)")
    _data_say(f"decoded: {report.decoded} of {report.pairs} image/mask pairs")
    for problem in report.problems[:10]:
        err_console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    error = problems_error(report)
    if error is not None:
        raise error
    if report.cache_files:
        _data_say(f"cached at {size} px: {next(iter(report.cache_files.values())).parent}")
    _data_say("usable", style="bold green")


# --- models and train commands ---
@app.command("models")
def models_cmd(
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
    console.print(
        f"{arch} f={filters}, {norm}, {size}x{size}, {classes} classes: "
        f"{count_params(model):,} parameters, {count_macs(model) / 1e9:.2f} GMAC per image",
        highlight=False,
        soft_wrap=True,
    )


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run folder (models/ and CSVs go here).")],
    preset: Annotated[
        str, typer.Option(help="Preset: quick, seed, smoke, nuclei or membrane.")
    ] = "quick",
    config: Annotated[Path | None, typer.Option(help="A TOML config over the preset.")] = None,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", help="pets or folder.")] = None,
) -> None:
    """Train every model of the config's grid (resumable; finished models are skipped)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeElapsedColumn as Elapsed

    from unetq.config import build_config
    from unetq.data import open_dataset
    from unetq.runfolder import RunFolder
    from unetq.runlock import own_run_folder
    from unetq.study import prepare_run_dir
    from unetq.train import train_grid

    values = {"data.format": fmt, "data.data_dir": data_dir}
    cfg = build_config(preset, config, set_, values)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Elapsed())
    with own_run_folder(out), Progress(*columns, console=console) as progress:
        prepare_run_dir(cfg, out)
        index = open_dataset(cfg.data, progress=progress)
        if index.synthetic:
            console.print(f"[bold yellow]SYNTHETIC DATA[/]: {index.note}")
        records = train_grid(cfg, index, None, out, progress)
    for r in records:
        flag = "  [bold red]COLLAPSED[/]" if r.collapsed else ""
        console.print(
            f"{r.model_id}: best epoch {r.best_epoch}/{r.epochs}, val_loss {r.best_val_loss:.4f}, "
            f"val fg IoU {r.val_fg_iou:.3f}, {r.seconds_per_epoch:.1f} s/epoch{flag}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"wrote {RunFolder(out).trained_csv}", highlight=False)


# --- compress commands ---
@app.command()
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
    from rich.progress import Progress

    from unetq import compress as comp

    cfg = comp.compress_config(variants, calibration_images, verify_images, int8_io)
    data = comp.data_config(data_dir, fmt, model) if data_dir is not None else None
    comp.model_input_hw(model)  # a bad model fails here, before the progress display
    warn = lambda text: console.print(f"[yellow]warning:[/] {text}", highlight=False)  # noqa: E731
    with Progress(console=console, transient=True) as progress:
        records, csv_path = comp.run_compress(model, cfg.variants, out, cfg, data, progress, warn)
    console.print(comp.summary_table(records))
    console.print(f"wrote {csv_path}", highlight=False)
    error = comp.failures_error(records)
    if error is not None:
        raise error


# --- evaluate and bench commands ---
def _run_config(run: Path, values: dict | None = None):
    """RUN/config.toml (defaults when absent) with flag values applied."""
    from unetq.config import StudyConfig, override
    from unetq.runfolder import RunFolder

    folder = RunFolder(run)
    if not folder.root.is_dir():
        raise UnetqError(f"run folder not found: {run}")
    cfg = folder.load_config() if folder.config.exists() else StudyConfig()
    return override(cfg, values=values)


def _frame_tables(df, columns: list[tuple[str, str, int | None]], title: str) -> None:
    """Print one rich table per model: (column, header, decimals or None for text)."""
    from rich import box
    from rich.table import Table

    if df.empty:
        console.print(f"{title}: no rows")
        return
    # a terminal keeps its width; a pipe or log file gets whole tables rather than "…"
    out = console if console.is_terminal else Console(width=160, file=console.file)
    for model_id, group in df.groupby("model_id", sort=False):
        table = Table(title=f"{model_id}: {title}", box=box.SIMPLE_HEAD)
        for _, header, digits in columns:
            table.add_column(header, justify="left" if digits is None else "right", no_wrap=True)
        for row in group.to_dict("records"):
            table.add_row(*(_cell(row.get(col), digits) for col, _, digits in columns))
        out.print(table)


def _cell(value, digits: int | None) -> str:
    if digits is None:
        return "–" if value is None or value != value else str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if number != number else f"{number:.{digits}f}"


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Run folder (holds models/).")],
    split: Annotated[
        str, typer.Option("--split", help="train, val or test (cross mode: every image).")
    ] = "test",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Dataset folder; another dataset than the run's means cross-dataset mode.",
        ),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="pets or folder (cross mode: detected).")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Cross mode: results go to RUN/cross/NAME (default: the folder name)."
        ),
    ] = None,
) -> None:
    """Accuracy of every variant of every model in a run, per image; resumable.

    Given another dataset with the same classes (--data-dir, or --name), every image of it is a
    test image and the results go to RUN/cross/NAME/.
    """
    from rich.progress import Progress

    from unetq.evaluate import accuracy_summary, evaluate_command
    from unetq.runlock import own_run_folder

    if split not in ("train", "val", "test"):
        raise typer.BadParameter(f"'{split}' is not train, val or test", param_hint="--split")
    if fmt is not None and fmt not in ("pets", "folder"):
        raise typer.BadParameter(f"'{fmt}' is not pets or folder", param_hint="--format")
    with own_run_folder(run, create=False), Progress(console=console, transient=True) as progress:
        path, cross = evaluate_command(run, split, data_dir, fmt, name, progress)
    columns = [
        ("variant", "variant", None),
        ("runtime", "runtime", None),
        ("n_images", "images", 0),
        ("fg_iou", "fg IoU", 3),
        ("fg_dice", "fg Dice", 3),
        ("fg_iou_dataset", "pooled IoU", 3),
        ("miou", "mIoU", 3),
        ("agreement", "agree", 4),
        ("seed_iou", "study IoU", 3),
    ]
    where = f"dataset '{cross}' (every image)" if cross else split
    _frame_tables(accuracy_summary(path), columns, f"accuracy on {where}, mean per image")
    console.print(f"wrote {path}", highlight=False)


@app.command()
def bench(
    run: Annotated[Path, typer.Option("--run", help="Run folder (holds models/).")],
    threads: Annotated[
        str | None, typer.Option("--threads", help="Comma list of counts or 'all' (e.g. 1,all).")
    ] = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", min=1, help="Timed calls per measurement.")
    ] = None,
    warmup: Annotated[
        int | None, typer.Option("--warmup", min=0, help="Untimed calls before timing.")
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option("--rounds", min=1, help="Interleave each model's measurements in N rounds."),
    ] = None,
    remeasure: Annotated[
        bool, typer.Option("--remeasure", help="Measure again what was already measured.")
    ] = False,
) -> None:
    """Latency, memory and size of every variant, each in a fresh process; resumable."""
    from rich.progress import Progress

    from unetq.bench.run import bench_run
    from unetq.runlock import own_run_folder

    cfg = _run_config(run, {"bench.rounds": rounds})
    threads_list = threads.split(",") if threads else None
    with own_run_folder(run, create=False), Progress(console=console, transient=True) as progress:
        path = bench_run(
            run, cfg, threads_list, repeats, warmup, progress=progress, remeasure=remeasure
        )
    import pandas as pd

    df = pd.read_csv(path)
    df = df[df["threads"].notna()] if "threads" in df else df.iloc[0:0]
    if "size_bytes" in df:
        df = df.assign(size_mb=df["size_bytes"] / 1e6)
    columns = [
        ("variant", "variant", None),
        ("runtime", "runtime", None),
        ("threads", "thr", 0),
        ("precision", "precision", None),
        ("latency_ms_median", "ms med", 1),
        ("latency_ms_p95", "p95", 1),
        ("speedup_vs_keras", "x keras", 2),
        ("speedup_vs_keras_paired", "x keras paired", 2),
        ("model_memory_mb", "mem MB", 0),
        ("size_mb", "size MB", 1),
        ("fg_iou", "fg IoU", 3),
    ]
    _frame_tables(df, columns, "median ms per image (model call only)")
    console.print(f"wrote {path}", highlight=False)


# --- study, report, show, predict commands ---
@app.command()
def study(
    preset: Annotated[
        str, typer.Option(help="Preset: quick, seed, smoke, nuclei or membrane.")
    ] = "quick",
    config: Annotated[Path | None, typer.Option(help="A TOML config over the preset.")] = None,
    data_dir: DataDirOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", help="pets or folder.")] = None,
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

    cfg = build_config(preset, config, set_, {"data.data_dir": data_dir, "data.format": fmt})
    if dry_run:
        _print_plan(cfg)
        return
    from unetq.study import run_study

    run_dir = out or Path("runs") / preset
    report = run_study(cfg, run_dir, console, executor, ray_address, mlflow)
    console.print(f"[bold green]report:[/] {report}")


def _print_plan(cfg) -> None:
    from rich.table import Table

    from unetq.plan import hours, make_plan, plan_lines
    from unetq.runtimes import usable_cores

    with console.status("timing a few training steps on this machine"):
        plan = make_plan(cfg)
    table = Table(title=f"unetq study --dry-run: {cfg.name}")
    for header in ("training run", "GMAC / image", "epochs", "images / epoch", "estimate"):
        table.add_column(header, justify="left" if header == "training run" else "right")
    for unit in plan.training:
        table.add_row(
            unit.run_id,
            f"{unit.gmacs:.2f}",
            str(unit.epochs),
            str(unit.images_per_epoch),
            hours(unit.seconds),
        )
    console.print(table)
    for line in plan_lines(plan, usable_cores()):
        console.print(line, highlight=False, soft_wrap=True)


@app.command()
def benchmark(
    model: Annotated[Path, typer.Option("--model", help="Your trained model (.keras or .h5).")],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Labelled images (without: speed, size, memory only)."),
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="pets or folder.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<model>).")] = None,
    variants: Annotated[
        str | None, typer.Option("--variants", help="Comma list (default: every variant).")
    ] = None,
    threads: Annotated[
        str | None, typer.Option("--threads", help="Comma list of counts or 'all' (1,all).")
    ] = None,
    input_range: Annotated[
        str | None,
        typer.Option(
            "--input-range",
            help="Pixels the model expects: 0,1 / -1,1 / 0,255 (default: from its Rescaling "
            "layer, else 0,1).",
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

    if fmt is not None and fmt not in ("pets", "folder"):
        raise typer.BadParameter(f"'{fmt}' is not pets or folder", param_hint="--format")
    values = {
        "name": model_id_for(model),
        "compress.variants": variants.split(",") if variants else None,
        "bench.threads": [t.strip() for t in threads.split(",")] if threads else None,
        "robustness.enabled": robustness,
    }
    cfg = build_config(preset, None, set_, values)
    run_dir = out or Path("runs") / model_id_for(model)
    report = run_benchmark(model, cfg, run_dir, data_dir, fmt, input_range, size, console)
    console.print(f"[bold green]report:[/] {report}")


@app.command()
def recommend(
    run: Annotated[Path, typer.Option("--run", help="Run folder (evaluated and benchmarked).")],
    max_iou_drop: Annotated[
        float,
        typer.Option("--max-iou-drop", min=0, help="Points of fg IoU below keras (0.5 = 0.005)."),
    ] = 0.5,
    threads: Annotated[
        str, typer.Option("--threads", help="Thread count the latency is taken at, or 'all'.")
    ] = "1",
    max_ms: Annotated[
        float | None, typer.Option("--max-ms", min=0, help="Median ms per image at most.")
    ] = None,
    max_mb: Annotated[
        float | None, typer.Option("--max-mb", min=0, help="Artifact size on disk at most (MB).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="A model id (default: the best keras model).")
    ] = None,
    all_models: Annotated[
        bool, typer.Option("--all-models", help="One recommendation per model.")
    ] = False,
) -> None:
    """The fastest variant and runtime within accuracy, latency and size budgets."""
    from unetq.bench.run import resolve_threads
    from unetq.recommend import Budgets, recommend, summary_lines

    [count] = resolve_threads(threads)
    budgets = Budgets(max_iou_drop, max_ms, max_mb, count)
    for rec in recommend(run, budgets, model, all_models):
        for line in summary_lines(rec):
            console.print(line, highlight=False, soft_wrap=True)
        for candidate, reason in rec.others:
            what = f"{candidate.variant} on {candidate.runtime}"
            tied = "as fast within the noise, more accuracy loss or size"
            verdict = reason or (tied if candidate in rec.tied else "within budget, slower")
            console.print(
                f"  {what:36s} {candidate.latency_ms:8.2f} ms  {verdict}",
                highlight=False,
                soft_wrap=True,
            )


@app.command()
def robustness(
    run: Annotated[Path, typer.Option(help="Run folder.")],
    data_dir: DataDirOpt = None,
    set_: SetOpt = None,
) -> None:
    """Accuracy of each variant under image corruptions, against the float model."""
    from unetq.config import override
    from unetq.data import open_dataset
    from unetq.robustness import robustness_run
    from unetq.runfolder import RunFolder
    from unetq.runlock import own_run_folder
    from unetq.study import make_progress

    cfg = override(RunFolder(run).load_config(), set_, {"data.data_dir": data_dir})
    with own_run_folder(run, create=False), make_progress(console) as progress:
        out = robustness_run(run, open_dataset(cfg.data), cfg, progress=progress)
    console.print(f"robustness: {out}")


@app.command()
def report(run: Annotated[Path, typer.Option(help="Run folder.")]) -> None:
    """Rebuild a run's HTML report from its CSVs; recomputes nothing."""
    from unetq.report import build_report
    from unetq.runfolder import RunFolder
    from unetq.runlock import own_run_folder

    RunFolder(run).load_config()  # a clear error when RUN is not a run folder
    with own_run_folder(run, create=False):
        console.print(f"report: {build_report(run)}")


@app.command()
def show(
    run: Annotated[Path, typer.Option(help="Run folder.")],
    image: Annotated[str | None, typer.Option(help="Test image name (default: the first).")] = None,
    model: Annotated[str | None, typer.Option(help="Model id (default: the last).")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG file to write.")] = None,
) -> None:
    """The single-image panel: input, truth, every variant's prediction and disagreement."""
    from unetq.report.panel import make_panel

    console.print(f"panel: {make_panel(run, image, model, out)}")


@app.command()
def predict(
    model: Annotated[
        Path, typer.Option(help="A Keras model (.keras), a .tflite or an OpenVINO .xml variant.")
    ],
    images: Annotated[Path, typer.Option(help="An image file or a folder of images.")],
    out: Annotated[Path, typer.Option(help="Folder for masks and overlays.")],
    runtime: Annotated[
        str | None, typer.Option(help="keras, litert or openvino (default from the file).")
    ] = None,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    background: Annotated[int, typer.Option(help="Background class (not overlaid).")] = 0,
    tile_overlap: Annotated[
        int | None,
        typer.Option(
            help="Segment each image at its own size by overlapping tiles of the model's input "
            "(pixels of overlap). Default: the study's own setting for a model of a tile-mode "
            "run folder, else resize to the model's input."
        ),
    ] = None,
) -> None:
    """Segment your own images; writes mask PNGs at each image's size and overlays."""
    from rich.progress import Progress

    from unetq.predict import predict_images, run_tile_overlap

    if tile_overlap is None:
        tile_overlap = run_tile_overlap(model)
    with Progress(console=console, transient=True) as progress:
        result = predict_images(
            model, images, out, runtime, threads, background, progress, tile_overlap
        )
    for path, reason in result.skipped:
        console.print(f"[yellow]skipped[/] {path}: {reason}")
    if result.ms_per_image:
        import statistics

        ms = statistics.median(result.ms_per_image)
        console.print(
            f"{len(result.written)} images segmented into {out}; "
            f"median {ms:.1f} ms per image ({'tiles' if tile_overlap is not None else 'resize'}"
            f" and model calls, {threads} thread(s))"
        )
    if not result.written:
        raise UnetqError(f"no readable images in {images}")


def main(argv: list[str] | None = None) -> None:
    """Entry point and the one error boundary of the command line.

    Usage errors print the usage and exit 2; errors a user can cause (data, models, config) one
    line and exit 2; a write the disk refuses one line naming the path, exit 1; Ctrl-C (or
    SIGTERM) one `interrupted:` line, exit 130 (143), finished work kept. A bug in unetq keeps
    its traceback. Nothing here depends on how typer or click are packaged: typer swallows
    KeyboardInterrupt in some releases, so signals raise unetq's own `Interrupted` instead.
    """
    catch_signals()
    try:
        result = app(args=argv, standalone_mode=False)
    except (Interrupted, KeyboardInterrupt) as exc:
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        what = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        _fail(f"interrupted ({what}): finished work is saved; rerun the same command to resume")
        sys.exit(code)
    except UnetqError as exc:
        _fail(str(exc), label="error: ")
        sys.exit(exc.exit_code)
    except Exception as exc:
        if _is_usage_error(exc):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":  # end of input at a prompt
            sys.exit(1)
        storage = storage_error(exc)
        if storage is None:
            raise
        _fail(str(storage), label="error: ")
        sys.exit(storage.exit_code)
    sys.exit(result if isinstance(result, int) else 0)


def catch_signals() -> None:
    """SIGINT and SIGTERM raise Interrupted in the main thread (child processes see their own)."""

    def interrupt(signum, frame):
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def _is_usage_error(exc: BaseException) -> bool:
    """click's (or typer's vendored click's) usage errors: they know their exit code and output."""
    return isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "show", None))


def _fail(message: str, label: str = "") -> None:
    err_console.print(Text.assemble((label, "bold red"), message), soft_wrap=True)


if __name__ == "__main__":
    main()
