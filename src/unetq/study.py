"""`unetq study`: the whole pipeline over a config's grid, step by step, resumable.

Each step detects finished work from the files it writes (atomically), so rerunning a study
after an interruption redoes only what was not finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from unetq.bench.run import bench_run
from unetq.cluster import check_executor, open_executor
from unetq.compress import (
    compress_models,
    compress_rows,
    compression_images,
    guard_validation,
    scored_validation,
)
from unetq.config import StudyConfig, to_toml
from unetq.data import load_inputs, mean_tiles_per_image, open_dataset
from unetq.data.images import image_size
from unetq.errors import ConfigError
from unetq.evaluate import evaluate_run
from unetq.fileio import write_csv, write_json, write_text
from unetq.inside.run import inspect_run, keras_model_ids
from unetq.progress import make_progress
from unetq.report import build_report
from unetq.report.panel import make_panel
from unetq.results import write_average_results
from unetq.robustness import robustness_run
from unetq.runfolder import RunFolder, read_json
from unetq.runlock import own_run_folder
from unetq.tracking import check_tracking, log_study
from unetq.train import train_grid

# Sections whose change alters results: a run folder holds one value of them.
RESULT_SECTIONS = ("data", "train", "compress")


@dataclass
class StudyContext:
    cfg: StudyConfig
    run_dir: Path
    console: Console
    progress: Progress
    index: object = None
    arrays: dict = field(default_factory=dict)
    executor: Any = None  # cluster.RayExecutor: runs the groups of distributed stages
    mlflow: str | None = None  # tracking URI the finished study is logged to

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.run_dir)

    def split(self, name: str):
        """Labelled images at the model's input size (data.load_inputs)."""
        if name not in self.arrays:
            self.arrays[name] = load_inputs(self.index, name, self.cfg.data, progress=self.progress)
        return self.arrays[name]


def prepare_run_dir(cfg: StudyConfig, run_dir: Path) -> None:
    """Write config.toml; refuse to mix results of a different config in one folder."""
    run = RunFolder(run_dir)
    if run.config.exists():
        old = run.load_config()
        for section in RESULT_SECTIONS:
            if getattr(old, section) != getattr(cfg, section):
                raise ConfigError(
                    f"{run_dir} holds a study with a different [{section}] config; "
                    "use another --out or delete the folder"
                )
    write_text(run.config, to_toml(cfg))


def step_data(ctx: StudyContext) -> None:
    if ctx.index is None:
        ctx.index = open_dataset(ctx.cfg.data, progress=ctx.progress)
    index = ctx.index
    if index.synthetic:
        ctx.console.print(f"[bold yellow]SYNTHETIC DATA[/]: {index.note}")
    else:
        ctx.console.print(f"data: {index.note or index.root}")
    write_json(
        ctx.run.dataset,
        {
            "format": index.format,
            "root": str(index.root),
            "synthetic": index.synthetic,
            "note": index.note,
            "num_classes": index.num_classes,
            "background_class": index.background_class,
            "class_names": list(index.class_names),
            "mask_values": {str(k): v for k, v in index.mask_values.items()},
            "splits": {k: len(v) for k, v in index.splits.items()},
            "skipped": len(index.skipped),
            **tile_info(index, ctx.cfg),
        },
    )


WHOLE_SIZES = 10  # whole images the bench times end to end in tile mode (one per round)


def tile_info(index, cfg: StudyConfig) -> dict:
    """Tile mode: the tile, its overlap and how many tiles a whole image of the evaluated split
    takes on average (the bench times one tile; a whole image costs that many calls)."""
    if cfg.data.mode != "tile":
        return {"mode": cfg.data.mode}
    sizes = [image_size(p.image)[::-1] for p in index.split_pairs(cfg.evaluate.split)]
    data = cfg.data
    picks = np.linspace(0, len(sizes) - 1, min(len(sizes), WHOLE_SIZES)).round().astype(int)
    return {
        "mode": "tile",
        "tile": data.image_size,
        "tile_overlap": data.tile_overlap,
        "tiles_per_image": mean_tiles_per_image(sizes, data.image_size, data.tile_overlap),
        # (height, width) of images spread over the split: the bench times them end to end
        "whole_sizes": [list(sizes[i]) for i in picks] if sizes else [],
    }


def step_train(ctx: StudyContext) -> None:
    if ctx.cfg.data.mode == "tile":  # random crops of the native images: train_grid loads them
        train, val, classes = ctx.index, None, {}
    else:
        train, val = ctx.split("train"), ctx.split("val")
        classes = {
            "num_classes": ctx.index.num_classes,
            "background_class": ctx.index.background_class,
        }
    train_grid(ctx.cfg, train, val, ctx.run_dir, ctx.progress, runner=ctx.executor, **classes)


def step_compress(ctx: StudyContext) -> None:
    cfg = ctx.cfg.compress
    train, val = ctx.split("train"), ctx.split("val")
    calibration, verify = compression_images(train.images, val.images, cfg)
    scored, tiles = scored_validation(ctx.index, ctx.cfg.data, val, ctx.progress)
    validation = guard_validation(
        scored, cfg, ctx.index.num_classes, ctx.index.background_class, tiles
    )
    compress_run_models(ctx, cfg.variants, calibration, verify, validation)


def compress_run_models(ctx: StudyContext, variants, calibration, verify, validation=None):
    """Every model of the run into `variants`; failures reported; compressed_models_info.csv."""
    records = compress_models(
        [ctx.run.model_file(m) for m in ctx.run.model_ids()],
        variants,
        calibration=calibration,
        verify=verify,
        cfg=ctx.cfg.compress,
        progress=ctx.progress,
        validation=validation,
        runner=ctx.executor,
    )
    report_compress_failures(ctx, records)
    write_csv(ctx.run.compressed_csv, compress_rows(records))


def report_compress_failures(ctx: StudyContext, records) -> None:
    """One line per variant that could not be made; the others went on."""
    for record in records:
        if record.error:
            ctx.console.print(
                f"[yellow]{record.model_id} {record.variant} not made:[/] {record.error}",
                highlight=False,
                soft_wrap=True,
            )


def step_evaluate(ctx: StudyContext) -> None:
    split = ctx.cfg.evaluate.split
    evaluate_run(ctx.run_dir, ctx.index, split, ctx.cfg, ctx.progress, runner=ctx.executor)


def step_bench(ctx: StudyContext) -> None:
    bench = ctx.cfg.bench
    machine = nullcontext(True)  # whatever else runs here is the user's to stop
    if ctx.executor is not None:  # alone on the driver's node, or on the bench node
        machine = ctx.executor.bench_machine(ctx.run_dir, ctx.progress)
    with machine:  # measured on the bench node: this merges its parts and measures nothing
        bench_run(
            ctx.run_dir, ctx.cfg, bench.threads, bench.repeats, bench.warmup, progress=ctx.progress
        )


def step_inspect(ctx: StudyContext) -> None:
    """layers.csv of every model (per layer: cost, time, bound, error), after the bench so the
    machine's peaks are known; the average CSV gains each variant's limit."""
    if not ctx.cfg.inspect.enabled:
        return
    others = sorted(set(ctx.run.model_ids()) - set(keras_model_ids(ctx.run)))
    if others:
        ctx.console.print(
            f"[yellow]inspect:[/] the per-layer view reads Keras models, not {', '.join(others)}",
            highlight=False,
        )
    peaks = read_json(ctx.run.machine).get("peaks") or {}
    images = ctx.split("val").images if ctx.index is not None else None
    inspect_run(ctx.run_dir, ctx.cfg, peaks, images, ctx.progress)
    write_average_results(ctx.run_dir)


def step_robustness(ctx: StudyContext) -> None:
    if ctx.cfg.robustness.enabled:
        robustness_run(ctx.run_dir, ctx.index, ctx.cfg, progress=ctx.progress)


def step_report(ctx: StudyContext) -> None:
    if ctx.index is not None and not ctx.run.panel.exists():  # the panel shows a test image
        make_panel(ctx.run_dir)
    build_report(ctx.run_dir)
    if ctx.mlflow:
        experiment = log_study(ctx.run_dir, ctx.mlflow, ctx.progress)
        ctx.console.print(f"mlflow: logged to {ctx.mlflow} (experiment {experiment})")


STEPS: list[tuple[str, Callable[[StudyContext], None]]] = [
    ("data", step_data),
    ("train", step_train),
    ("compress", step_compress),
    ("evaluate", step_evaluate),
    ("bench", step_bench),
    ("inspect", step_inspect),
    ("robustness", step_robustness),
    ("report", step_report),
]


def check_study(
    executor: str, ray_address: str | None, mlflow: str | None, timeout: float | None = None
) -> None:
    """A missing extra, an unknown executor, a Ray head whose port does not answer within
    `timeout` or a bad tracking URI: one line before anything runs or is written."""
    if mlflow:
        check_tracking(mlflow)
    check_executor(executor, ray_address, timeout)


def run_study(
    cfg: StudyConfig,
    run_dir: Path,
    console: Console | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    mlflow: str | None = None,
) -> Path:
    """Run every step of the study into run_dir (units on a Ray cluster with executor 'ray',
    the finished study logged to the MLflow tracking URI `mlflow`); return the report's path."""
    check_study(executor, ray_address, mlflow, cfg.cluster.connect_timeout_s)
    fields = {"mlflow": mlflow}
    return run_steps(cfg, run_dir, STEPS, "study", console, fields, executor, ray_address)


def run_steps(
    cfg: StudyConfig,
    run_dir: Path,
    steps: list[tuple[str, Callable[[StudyContext], None]]],
    what: str,
    console: Console | None = None,
    ctx_fields: dict | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> Path:
    """Run `steps` in order into run_dir (config.toml first), log their times; return the
    report's path. The run folder is this process's alone while it runs."""
    console = console or Console()
    run_dir = Path(run_dir)
    with open_executor(executor, ray_address, cfg, console) as ex, own_run_folder(run_dir):
        fields = {**(ctx_fields or {}), "executor": ex}
        return _run_steps(cfg, run_dir, steps, what, console, fields)


def _run_steps(cfg, run_dir: Path, steps, what: str, console: Console, ctx_fields) -> Path:
    prepare_run_dir(cfg, run_dir)
    started = time.perf_counter()
    with make_progress(console) as progress:
        ctx = StudyContext(cfg, run_dir, console, progress, **(ctx_fields or {}))
        overall = progress.add_task(what, total=len(steps))
        for name, step in steps:
            progress.update(overall, description=f"{what}: {name}")
            step(ctx)
            progress.advance(overall)
            _log_step(run_dir, name, time.perf_counter() - started)
    console.print(f"{what} finished in {time.perf_counter() - started:.0f} s")
    return RunFolder(run_dir).report


def _log_step(run_dir: Path, step: str, seconds: float) -> None:
    path = RunFolder(run_dir).steps
    log = read_json(path)
    log[step] = round(seconds, 1)
    write_json(path, log)
