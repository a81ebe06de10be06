"""Every variant and runtime of one model, side by side, measured in this run on this machine.

    python benchmarks/compare_variants.py runs/quick/models/xception-f32-bn-e50
    python benchmarks/compare_variants.py MODEL_DIR --threads 1,all --repeats 50 --markdown out.md

Each (variant, runtime, threads) is timed in its own fresh child process (see unetq.bench),
the processes taking turns in rounds: warm-up first, then only the model call, on the same
seeded images in the same order. Prints a rich table and the same table as Markdown (for a
design review). Ratios are to the keras model measured in the same run at the same thread
count: in each round, keras' median over this variant's, then the median over rounds, so a
slowdown of the whole machine that hits both alike cancels out. Nothing is written into the
run folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from unetq.bench.machine import machine_info
from unetq.bench.run import bench_jobs, bench_record, resolve_threads
from unetq.bench.session import bench_images, measure_interleaved
from unetq.config import StudyConfig, build_config
from unetq.errors import UnetqError
from unetq.results import paired_ratio


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="models/<model_id>/ of a run")
    p.add_argument("--threads", default="1,all", help="comma list of counts or 'all'")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument("--slow-repeats", type=int, default=3, help="timed calls for int16x8")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of timed blocks")
    p.add_argument("--runtimes", default="keras,litert,openvino", help="comma list")
    p.add_argument("--images", type=int, default=8, help="distinct images cycled through")
    p.add_argument("--size", type=int, default=None, help="input size (default: run config)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the Markdown here")
    return p.parse_args(argv)


def image_size(model_dir: Path, size: int | None) -> int:
    if size:
        return size
    config = model_dir.parent.parent / "config.toml"
    cfg = build_config(config_file=config) if config.exists() else StudyConfig()
    return cfg.data.image_size


def measure(args: argparse.Namespace, console: Console) -> tuple[list, list[int]]:
    threads = resolve_threads(args.threads)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    size = image_size(args.model_dir, args.size)
    images = bench_images((size, size), args.images)
    jobs = bench_jobs(
        args.model_dir, runtimes, threads, args.repeats, args.warmup, args.slow_repeats
    )
    if not jobs:
        raise UnetqError(f"no variant artifacts in {args.model_dir}")
    console.print(
        f"  {len(jobs)} measurements, one process each, interleaved in {args.rounds} rounds ...",
        highlight=False,
    )
    results = measure_interleaved([job for _, job in jobs], images, args.rounds)
    records = []
    for (variant, job), result in zip(jobs, results, strict=True):
        if isinstance(result, UnetqError):
            raise result
        records.append(
            bench_record(args.model_dir.name, variant, job, result, len(images), memory=True)
        )
    return records, threads


def table_rows(records: list, threads: list[int]) -> list[dict[str, str]]:
    """One row per (variant, runtime): size, ms per thread count, images/s, ratios, memory."""
    keras = {r.threads: r.round_medians_ms for r in records if r.variant == "keras"}
    lo, hi = threads[0], threads[-1]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in records:
        row = rows.setdefault(
            (r.variant, r.runtime),
            {
                "variant": r.variant,
                "runtime": r.runtime,
                "precision": r.precision,
                "size MB": f"{r.size_bytes / 1e6:.2f}",
            },
        )
        ratio = paired_ratio(keras.get(r.threads), r.round_medians_ms)
        row[f"ms {r.threads}t"] = f"{r.latency_ms_median:.1f} (p95 {r.latency_ms_p95:.1f})"
        row[f"x keras {r.threads}t"] = "–" if ratio != ratio else f"{ratio:.2f}"
        if r.threads == hi:
            row[f"images/s {hi}t"] = f"{r.images_per_s:.1f}"
        peak = max(float(row.get("peak MB", 0) or 0), r.peak_rss_mb or 0.0)
        row["peak MB"] = f"{peak:.0f}"
        row["model MB"] = f"{r.model_memory_mb:.0f}" if r.model_memory_mb is not None else "–"
    columns = ["variant", "runtime", "precision", "size MB", f"ms {lo}t", f"ms {hi}t"]
    columns += [f"images/s {hi}t", f"x keras {lo}t", f"x keras {hi}t", "peak MB", "model MB"]
    columns = list(dict.fromkeys(columns))  # one thread count: no duplicate columns
    return [{c: row.get(c, "–") for c in columns} for row in rows.values()]


def machine_line(info: dict) -> str:
    isa = ", ".join(k for k, v in info["isa"].items() if v) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return (
        f"{info['cpu_model']}; {info['usable_cores']} usable cores "
        f"({info['physical_cores']} physical); ISA: {isa}; load average {info['load_average']}; "
        f"{versions}; Python {info['python']}"
    )


def to_markdown(rows: list[dict[str, str]], title: str, machine: str) -> str:
    cols = list(rows[0])
    lines = [f"### {title}", "", f"Machine: {machine}", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("| " + " | ".join("---" if c in ("variant", "runtime", "precision") else "---:"
                                   for c in cols) + " |")  # fmt: skip
    lines += ["| " + " | ".join(row[c] for c in cols) + " |" for row in rows]
    lines.append("")
    lines.append(
        "Median ms per image of the model call alone (p95 in brackets), after warm-up, batch 1, "
        "each measurement in a fresh process; x keras = keras median / this median at the same "
        "thread count in each round, then the median of the rounds' ratios (above 1 is faster); "
        "peak MB = peak resident set of the measuring process; "
        "model MB = peak minus the process after imports."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not args.model_dir.is_dir():
        console.print(f"[bold red]error:[/] model folder not found: {args.model_dir}")
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    before = machine_info()
    console.print(f"measuring {args.model_dir} (each line is a fresh process):", highlight=False)
    try:
        records, threads = measure(args, console)
    except UnetqError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    info = machine_info()
    loads = [before["load_average"], info["load_average"]]
    if all(loads):
        info["load_average"] = f"{loads[0][0]} before, {loads[1][0]} after (1 min)"
    rows = table_rows(records, threads)
    title = f"{args.model_dir.name}: every variant and runtime"
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(
            col, justify="left" if col in ("variant", "runtime", "precision") else "right"
        )
    for row in rows:
        table.add_row(*row.values())
    wide = console if console.is_terminal else Console(width=200)
    wide.print(table)
    markdown = to_markdown(rows, title, machine_line(info))
    print(markdown, flush=True)  # plain stdout: no wrapping inside table rows
    if args.markdown:
        from unetq.fileio import write_text

        write_text(args.markdown, markdown)
        console.print(f"wrote {args.markdown}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
