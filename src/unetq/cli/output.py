"""The command line's one output helper: its consoles, tables and progress displays."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, RenderableType
from rich.progress import Progress
from rich.table import Table

from unetq.progress import make_progress
from unetq.variants import is_original

console = Console()
err_console = Console(stderr=True)
PIPE_WIDTH = 180  # columns of the console a pipe or log file gets

# (column, header, decimals; None: text)
Column = tuple[str, str, int | None]


def say(text: str, style: str | None = None) -> None:
    """One line as it is: no markup, no highlighting, no wrapping of paths."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def progress(transient: bool = False, download: bool = False, rate: str | None = None) -> Progress:
    """The progress display on this console (`transient`: gone before the command's table;
    `rate`: items per second in this unit)."""
    return make_progress(console, transient=transient, download=download, rate=rate)


def cell(value: Any, digits: int | None) -> str:
    """A number with `digits` decimals (None: text as it is); '–' for a missing value."""
    if digits is None:
        return "–" if value is None or value != value else str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if number != number else f"{number:.{digits}f}"


def print_table(rows: Iterable[dict], columns: list[Column], title: str, **options: Any) -> None:
    """One table: text columns left, numbers right; `options` go to rich's Table."""
    table = Table(title=title, **options)
    for _, header, digits in columns:
        table.add_column(header, justify="left" if digits is None else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(cell(row.get(key), digits) for key, _, digits in columns))
    print_wide(table)


def print_wide(renderable: RenderableType) -> None:
    """A table whole: a terminal keeps its width; a pipe or log file gets a wide console, so
    tables are not cut with '…'."""
    out = console if console.is_terminal else Console(width=PIPE_WIDTH, file=console.file)
    out.print(renderable)


def print_model_tables(df, columns: list[Column], title: str) -> None:
    """One table per model of a frame with a model_id column."""
    if df.empty:
        console.print(f"{title}: no rows")
        return
    for model_id, group in df.groupby("model_id", sort=False):
        rows = group.to_dict("records")
        print_table(rows, columns, f"{model_id}: {title}", box=box.SIMPLE_HEAD)


def print_summary(run_dir: Path) -> None:
    """A study's table: model, variant, size, accuracy, latency at each thread count, memory."""
    from unetq.report.tables import latency_columns, main_table, speedup_columns
    from unetq.runfolder import RunFolder, read_csv, read_json

    run = RunFolder(run_dir)
    dataset = read_json(run.dataset)
    synthetic = bool(dataset.get("synthetic"))
    title = "unetq study summary" + (" — SYNTHETIC DATA, not real images" if synthetic else "")
    table = main_table(read_csv(run.average_csv))
    if table.empty:
        console.print(f"{title}: no results yet")
        return
    tiles = dataset.get("tiles_per_image")
    caption = None
    if tiles is not None:
        caption = f"tile mode: ms per tile; a whole test image takes {tiles:.1f} tiles on average"
    unit = "tile" if tiles is not None else "img"
    columns: list[Column] = [
        ("model", "model", None),
        ("variant", "variant", None),
        ("runtime", "runtime", None),
        ("size_mb", "size MB", 2),
        ("fg_iou", "fg IoU", 3),
        ("fg_dice", "Dice", 3),
        ("agreement_pct", "agree %", 2),
    ]
    columns += [(c, f"ms/{unit} {c.removeprefix('ms_')}", 1) for c in latency_columns(table)]
    originals = sorted({v for v in table["variant"] if is_original(v)})
    ref = originals[0] if len(originals) == 1 else "keras"  # a user's onnx / tflite model: its own
    columns += [(c, f"x {ref} {c.removeprefix('x_keras_')}", 2) for c in speedup_columns(table)]
    columns += [("model_mem_mb", "model MB", 1)]
    rows = table.assign(agreement_pct=100 * table["agreement"]).to_dict("records")
    style = "bold yellow" if synthetic else "bold"
    print_table(rows, columns, title, title_style=style, caption=caption)
