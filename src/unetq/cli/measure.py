"""`unetq evaluate|bench|robustness|recommend`: measure a run's variants and pick one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unetq.cli.options import DataDirOpt, SetOpt, config_choice, needs_tensorflow
from unetq.cli.output import Column, console, print_model_tables, progress, say

ACCURACY_COLUMNS: list[Column] = [
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
LATENCY_COLUMNS: list[Column] = [
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


THROUGHPUT_COLUMNS: list[Column] = [
    ("throughput_images_per_s", "img/s", 0),
    ("throughput_setting", "at", None),
    ("throughput_vs_keras", "x keras img/s", 2),
]


def register(app: typer.Typer) -> None:
    for command in (evaluate, bench, robustness, recommend):
        app.command()(command)


@needs_tensorflow
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Run folder (holds models/).")],
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="train, val or test (cross mode: every image).",
            callback=config_choice("Split"),
        ),
    ] = "test",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Dataset folder; another dataset than the run's means cross-dataset mode.",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="pets or folder (cross mode: detected).",
            callback=config_choice("DatasetFormat"),
        ),
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
    from unetq.evaluate import accuracy_summary, evaluate_command
    from unetq.runlock import own_run_folder

    with own_run_folder(run, create=False), progress(transient=True) as bars:
        path, cross = evaluate_command(run, split, data_dir, fmt, name, bars)
    where = f"dataset '{cross}' (every image)" if cross else split
    title = f"accuracy on {where}, mean per image"
    print_model_tables(accuracy_summary(path), ACCURACY_COLUMNS, title)
    say(f"wrote {path}")


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
    from unetq.bench.run import bench_run
    from unetq.results import bench_table
    from unetq.runfolder import run_config
    from unetq.runlock import own_run_folder

    cfg = run_config(run, {"bench.rounds": rounds})
    threads_list = threads.split(",") if threads else None
    with own_run_folder(run, create=False), progress(transient=True) as bars:
        path = bench_run(
            run, cfg, threads_list, repeats, warmup, progress=bars, remeasure=remeasure
        )
    title = "median ms per image (model call only)"
    table = bench_table(path)
    columns = LATENCY_COLUMNS
    if "throughput_images_per_s" in table:
        columns = [*columns, *THROUGHPUT_COLUMNS]
        title += "; images/s over many images at the best setting"
    print_model_tables(table, columns, title)
    say(f"wrote {path}")


@needs_tensorflow
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

    cfg = override(RunFolder(run).load_config(), set_, {"data.data_dir": data_dir})
    with own_run_folder(run, create=False), progress() as bars:
        out = robustness_run(run, open_dataset(cfg.data), cfg, progress=bars)
    console.print(f"robustness: {out}")


def recommend(
    run: Annotated[Path, typer.Option("--run", help="Run folder (evaluated and benchmarked).")],
    max_iou_drop: Annotated[
        float,
        typer.Option("--max-iou-drop", min=0, help="Points of fg IoU below keras (0.5 = 0.005)."),
    ] = 0.5,
    threads: Annotated[
        str | None,
        typer.Option(
            "--threads",
            help="Thread count the speed is taken at, or 'all' (default: 1 for latency, all "
            "for throughput).",
        ),
    ] = None,
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
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="latency: one image alone; throughput: most images per second over many "
            "(measured at every core: --threads all is then the default).",
            callback=config_choice("Objective"),
        ),
    ] = "latency",
) -> None:
    """The fastest variant and runtime within accuracy, latency and size budgets."""
    from unetq.bench.run import resolve_threads
    from unetq.recommend import Budgets, other_lines, recommend, summary_lines

    [count] = resolve_threads(threads or ("all" if objective == "throughput" else "1"))
    budgets = Budgets(max_iou_drop, max_ms, max_mb, count, objective)
    for rec in recommend(run, budgets, model, all_models):
        for line in [*summary_lines(rec), *other_lines(rec)]:
            say(line)
