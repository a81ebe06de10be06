"""`unetq study`: the whole pipeline over a config's grid, step by step, resumable.

Each step detects finished work from the files it writes (atomically), so rerunning a study
after an interruption redoes only what was not finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from unetq.config import StudyConfig, load_toml, to_toml
from unetq.errors import ConfigError
from unetq.fileio import write_csv, write_json, write_text
from unetq.report.tables import COMPRESSED_CSV, main_table, read_csv

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

    def split(self, name: str):
        from unetq.data import load_split

        if name not in self.arrays:
            self.arrays[name] = load_split(
                self.index, name, self.cfg.data.image_size, progress=self.progress
            )
        return self.arrays[name]


def load_run_config(run_dir: Path) -> StudyConfig:
    path = Path(run_dir) / "config.toml"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a unetq run folder (no config.toml)")
    return StudyConfig.model_validate(load_toml(path))


def prepare_run_dir(cfg: StudyConfig, run_dir: Path) -> None:
    """Write config.toml; refuse to mix results of a different config in one folder."""
    path = run_dir / "config.toml"
    if path.exists():
        old = load_run_config(run_dir)
        for section in RESULT_SECTIONS:
            if getattr(old, section) != getattr(cfg, section):
                raise ConfigError(
                    f"{run_dir} holds a study with a different [{section}] config; "
                    "use another --out or delete the folder"
                )
    write_text(path, to_toml(cfg))


def step_data(ctx: StudyContext) -> None:
    from unetq.data import open_dataset

    ctx.index = open_dataset(ctx.cfg.data, progress=ctx.progress)
    index = ctx.index
    if index.synthetic:
        ctx.console.print(f"[bold yellow]SYNTHETIC DATA[/]: {index.note}")
    else:
        ctx.console.print(f"data: {index.note or index.root}")
    write_json(
        ctx.run_dir / "dataset.json",
        {
            "format": index.format,
            "root": str(index.root),
            "synthetic": index.synthetic,
            "note": index.note,
            "num_classes": index.num_classes,
            "background_class": index.background_class,
            "class_names": list(index.class_names),
            "splits": {k: len(v) for k, v in index.splits.items()},
            "skipped": len(index.skipped),
        },
    )


def step_train(ctx: StudyContext) -> None:
    from unetq.train import train_grid

    train_grid(
        ctx.cfg,
        ctx.split("train"),
        ctx.split("val"),
        ctx.run_dir,
        background_class=ctx.index.background_class,
        num_classes=ctx.index.num_classes,
        progress=ctx.progress,
    )


def step_compress(ctx: StudyContext) -> None:
    from unetq.compress import compress_models, compress_rows

    cfg = ctx.cfg.compress
    train, val = ctx.split("train"), ctx.split("val")
    verify = val.images[: cfg.verify_images] if len(val.names) else train.images[:1]
    records = compress_models(
        [model_dir / "model.keras" for model_dir in trained_model_dirs(ctx.run_dir)],
        cfg.variants,
        calibration=train.images[: cfg.calibration_images],
        verify=verify,
        cfg=cfg,
        progress=ctx.progress,
    )
    write_csv(ctx.run_dir / COMPRESSED_CSV, compress_rows(records))


def step_evaluate(ctx: StudyContext) -> None:
    from unetq.evaluate import evaluate_run

    evaluate_run(ctx.run_dir, ctx.index, ctx.cfg.evaluate.split, ctx.cfg, progress=ctx.progress)


def step_bench(ctx: StudyContext) -> None:
    from unetq.bench import bench_run, write_average_results

    bench = ctx.cfg.bench
    bench_run(
        ctx.run_dir, ctx.cfg, bench.threads, bench.repeats, bench.warmup, progress=ctx.progress
    )
    write_average_results(ctx.run_dir)


def step_robustness(ctx: StudyContext) -> None:
    if not ctx.cfg.robustness.enabled:
        return
    try:
        from unetq.robustness import robustness_run
    except ImportError:
        return
    robustness_run(ctx.run_dir, ctx.index, ctx.cfg, progress=ctx.progress)


def step_report(ctx: StudyContext) -> None:
    from unetq.report import build_report
    from unetq.report.panel import make_panel

    panel = ctx.run_dir / "report" / "panel.png"
    if not panel.exists():
        make_panel(ctx.run_dir)
    build_report(ctx.run_dir)


STEPS: list[tuple[str, Callable[[StudyContext], None]]] = [
    ("data", step_data),
    ("train", step_train),
    ("compress", step_compress),
    ("evaluate", step_evaluate),
    ("bench", step_bench),
    ("robustness", step_robustness),
    ("report", step_report),
]


def run_study(cfg: StudyConfig, run_dir: Path, console: Console | None = None) -> Path:
    """Run every step of the study into run_dir; return the report's path."""
    console = console or Console()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    prepare_run_dir(cfg, run_dir)
    started = time.perf_counter()
    with make_progress(console) as progress:
        ctx = StudyContext(cfg=cfg, run_dir=run_dir, console=console, progress=progress)
        overall = progress.add_task("study", total=len(STEPS))
        for name, step in STEPS:
            progress.update(overall, description=f"study: {name}")
            step(ctx)
            progress.advance(overall)
            _log_step(run_dir, name, time.perf_counter() - started)
    print_summary(run_dir, console, synthetic=bool(ctx.index and ctx.index.synthetic))
    console.print(f"study finished in {time.perf_counter() - started:.0f} s")
    return run_dir / "report" / "index.html"


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def print_summary(run_dir: Path, console: Console, synthetic: bool = False) -> None:
    """The terminal table: model, variant, size, accuracy, latency at each thread count, memory."""
    table = main_table(read_csv(run_dir / "model_performance_average_results.csv"))
    title = "unetq study summary" + (" — SYNTHETIC DATA, not real images" if synthetic else "")
    if table.empty:
        console.print(f"{title}: no results yet")
        return
    if not console.is_terminal:  # logs and pipes: wide enough that no column is cut
        console = Console(width=160, file=console.file)
    out = Table(title=title, title_style="bold yellow" if synthetic else "bold")
    ms_cols = [c for c in table.columns if c.startswith("ms_")]
    x_cols = [c for c in table.columns if c.startswith("x_keras_")]
    headers = ["model", "variant", "runtime", "size MB", "fg IoU", "Dice", "agree %"]
    headers += [f"ms/img {c.removeprefix('ms_')}" for c in ms_cols]
    headers += [f"x keras {c.removeprefix('x_keras_')}" for c in x_cols] + ["model MB"]
    for h in headers:
        out.add_column(h, justify="left" if h in ("model", "variant", "runtime") else "right")
    for row in table.itertuples(index=False):
        r = row._asdict()
        cells = [r["model"], r["variant"], r["runtime"], _num(r["size_mb"], 2)]
        cells += [_num(r["fg_iou"], 3), _num(r["fg_dice"], 3), _num(100 * r["agreement"], 2)]
        cells += [_num(r[c], 1) for c in ms_cols] + [_num(r[c], 2) for c in x_cols]
        cells += [_num(r.get("model_mem_mb"), 1)]
        out.add_row(*cells)
    console.print(out)


def trained_model_dirs(run_dir: Path) -> list[Path]:
    models = Path(run_dir) / "models"
    return sorted(
        p.parent for p in models.glob("*/model.keras") if not p.parent.name.startswith(".")
    )


def _num(value, digits: int) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if value != value else f"{value:.{digits}f}"


def _log_step(run_dir: Path, step: str, seconds: float) -> None:
    path = run_dir / "steps.json"
    try:
        log = json.loads(path.read_text())
    except (OSError, ValueError):
        log = {}
    log[step] = round(seconds, 1)
    write_json(path, log)


def overrides_for(cfg: StudyConfig, overrides: list[str], data_dir: Path | None = None):
    """A run's config with --set overrides (and --data-dir) applied on top."""
    from unetq.config import apply_override, validate

    raw = cfg.model_dump(mode="json", exclude_none=True)
    if data_dir is not None:
        overrides = [*overrides, f'data.data_dir="{data_dir}"']
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw)
