"""Run `unetq bench` on a run folder twice and compare the medians of every measurement.

    python benchmarks/repeatability.py runs/quick
    python benchmarks/repeatability.py runs/quick --models xception-f24-bn-e16 --tolerance 0.15

Each pass is a full `bench_run(..., remeasure=True)`: every (model, variant, runtime, threads)
timed again in a fresh child process with the run's bench settings. Prints one row per
measurement (median ms of pass 1 and 2, their ratio) and how many are within the tolerance.
The run folder keeps the second pass's results, as after any `unetq bench --remeasure`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from unetq.bench.run import bench_run
from unetq.errors import UnetqError
from unetq.results import read_bench_records
from unetq.runfolder import RunFolder

KEY = ("model_id", "variant", "runtime", "threads")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder with trained and compressed models")
    p.add_argument("--models", default=None, help="comma list of model ids (default: all)")
    p.add_argument("--tolerance", type=float, default=0.15, help="allowed relative difference")
    p.add_argument("--passes", type=int, default=2, help="how many times to bench")
    return p.parse_args(argv)


INTERVALS = {  # field -> its 95% interval's columns in the average CSV
    "latency_ms_median": ("latency_ms_median_ci95_low", "latency_ms_median_ci95_high"),
    "paired": ("speedup_vs_keras_paired_ci95_low", "speedup_vs_keras_paired_ci95_high"),
}


def one_pass(run: Path, cfg, console: Console) -> dict[tuple, dict]:
    """Every measurement's bench record, plus `paired`: its speedup_vs_keras_paired, and the
    95% intervals of both (`<field>_ci`: (low, high), None where there is none)."""
    import pandas as pd

    with Progress(console=console, transient=True) as progress:
        average = pd.read_csv(bench_run(run, cfg, progress=progress, remeasure=True))
    timed = average[average["threads"].notna()]
    rows = {
        (r["model_id"], r["variant"], r["runtime"], int(r["threads"])): r
        for r in timed.to_dict("records")
    }
    wanted = set(cfg.bench.models or [])
    records = {
        tuple(r[k] for k in KEY): r
        for r in read_bench_records(RunFolder(run))
        if not wanted or r["model_id"] in wanted
    }
    for key, r in records.items():
        row = rows.get(key, {})
        r["paired"] = _number(row.get("speedup_vs_keras_paired"))
        for field, (low, high) in INTERVALS.items():
            lo, hi = _number(row.get(low)), _number(row.get(high))
            r[f"{field}_ci"] = (lo, hi) if lo is not None and hi is not None else None
    return records


def _number(value) -> float | None:
    return None if value is None or value != value else float(value)


def overlapping(passes: list[dict[tuple, dict]], field: str) -> tuple[int, int]:
    """(measurements whose intervals in every pass share a point, measurements with intervals)."""
    both = total = 0
    for key in passes[0]:
        if field == "paired" and key[1] == "keras":
            continue  # keras over itself is 1 by definition
        intervals = [p[key].get(f"{field}_ci") for p in passes if key in p]
        if len(intervals) < len(passes) or None in intervals:
            continue
        total += 1
        both += max(lo for lo, _ in intervals) <= min(hi for _, hi in intervals)
    return both, total


def compare(
    passes: list[dict[tuple, dict]], tolerance: float, field: str = "latency_ms_median"
) -> tuple[list[list[str]], int]:
    rows, within = [], 0
    for key in sorted(passes[0]):
        medians = [p[key][field] for p in passes if key in p and p[key].get(field) is not None]
        if not medians or (field == "paired" and key[1] == "keras"):
            continue
        spread = max(medians) / min(medians) - 1.0
        ok = spread <= tolerance
        within += ok
        rows.append(
            [
                *map(str, key),
                *(f"{m:.2f}" for m in medians),
                f"{spread:+.1%}",
                "yes" if ok else "NO",
            ]
        )
    return rows, within


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        cfg = RunFolder(args.run).load_config()
        if args.models:
            cfg.bench.models = [m.strip() for m in args.models.split(",") if m.strip()]
        passes = []
        for i in range(args.passes):
            console.print(f"pass {i + 1} of {args.passes} ...")
            passes.append(one_pass(args.run, cfg, console))
    except UnetqError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    out = console if console.is_terminal else Console(width=200)
    ok = True
    for field, what in [
        ("latency_ms_median", "median ms per image"),
        ("paired", "keras' time / this one's, paired round by round (speedup_vs_keras_paired)"),
    ]:
        rows, within = compare(passes, args.tolerance, field)
        table = Table(title=f"{what}, {args.passes} passes of unetq bench on {args.run}")
        for col in [*KEY, *(f"pass {i + 1}" for i in range(args.passes)), "max/min - 1", "ok"]:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        console.print(
            f"{within} of {len(rows)} within {args.tolerance:.0%} across passes: {what}",
            highlight=False,
        )
        both, total = overlapping(passes, field)
        console.print(
            f"{both} of {total} have 95% intervals that overlap in every pass: {what}",
            highlight=False,
        )
        ok = ok and within == len(rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
