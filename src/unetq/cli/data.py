"""`unetq data fetch|check`: get and check datasets (no TensorFlow in this process)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unetq.cli.options import DataDirOpt, config_choice
from unetq.cli.output import err_console, progress, say

data_app = typer.Typer(help="Get and check datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


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
        say(f"using the local copy at {local[0]} (from {local[1]}); nothing downloaded")
        return
    target = dest or fetch.pets_cache_root()
    if fetch.is_complete(target):
        say(f"already downloaded: {target}")
        return
    with progress(download=True) as bars:
        path = fetch.fetch_pets(dest, progress=bars)
    say(f"Oxford-IIIT Pet ready at {path}")


@data_app.command("check")
def data_check(
    data_dir: DataDirOpt = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="Dataset layout: pets, folder or auto (detect).",
            callback=config_choice("FormatOrAuto"),
        ),
    ] = "auto",
    size: Annotated[
        int, typer.Option("--size", help="Also cache the splits resized to N px (0: don't).")
    ] = 160,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Split procedure: seed or official.",
            callback=config_choice("SplitProcedure"),
        ),
    ] = "seed",
) -> None:
    """Decode every image and mask of a dataset and report what it holds; exit 0 when usable."""
    from unetq.data.check import check_folder, problems_error

    with progress() as bars:
        index, report, cfg = check_folder(data_dir, fmt, size, split, bars)
    _say_index(index, cfg)
    shares = ", ".join(
        f"{name} {share:.1%}"
        for name, share in zip(index.class_names, report.class_shares, strict=True)
    )
    background = index.class_names[index.background_class]
    say(f"classes ({index.num_classes}, background = {background}): {shares}")
    if report.min_size:
        (w0, h0), (w1, h1) = report.min_size, report.max_size
        say(f"image sizes: {w0}x{h0} (smallest) to {w1}x{h1} (largest)")
    say(f"decoded: {report.decoded} of {report.pairs} image/mask pairs")
    for problem in report.problems[:10]:
        err_console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    error = problems_error(report)
    if error is not None:
        raise error
    if report.cache_files:
        say(f"cached at {size} px: {next(iter(report.cache_files.values())).parent}")
    say("usable", style="bold green")


def _say_index(index, cfg) -> None:
    """What the dataset's folder holds: pairs, skipped and unmatched files, splits."""
    from unetq.data.check import skipped_by_reason

    say(f"{index.note} (format {index.format})", style="bold")
    say(f"pairs found: {len(index.pairs)}")
    say(f"files skipped: {len(index.skipped)}")
    for reason, count, names in skipped_by_reason(index):
        more = ", ..." if count > len(names) else ""
        say(f"  {count} {reason}: {', '.join(names)}{more}")
    say(f"unmatched files (no partner): {len(index.unmatched)}")
    for path in index.unmatched[:5]:
        say(f"  {path}")
    if index.lists:
        say(f"official lists: {', '.join(f'{k} {len(v)}' for k, v in index.lists.items())}")
    sizes = " / ".join(f"{k} {len(v)}" for k, v in index.splits.items())
    say(f"split '{cfg.split}' (seed {cfg.split_seed}): {sizes}")
    if index.unsplit_names():
        say(f"pairs in no split: {len(index.unsplit_names())}")
