"""`unetq bench`: every (model, variant, runtime, threads) of a run folder, measured and merged.

Finished measurements are part files in the run folder (`.bench/`); a rerun with the same
settings on the same artifacts (compared by content) skips them.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from unetq.bench.machine import machine_info
from unetq.bench.probe import DEFAULT_LOADER, ProbeResult
from unetq.bench.session import ProbeJob, bench_images, measure_interleaved
from unetq.errors import UnetqError
from unetq.fileio import write_json
from unetq.records import BenchRecord
from unetq.results import write_average_results
from unetq.runfolder import (
    RunFolder,
    artifact_digest,
    artifact_size,
    read_json,
    say_reused,
    variant_runs,
)
from unetq.runtimes import usable_cores


def resolve_threads(threads: list[int | str] | tuple | str | None) -> list[int]:
    """[1, 'all'] -> [1, usable cores] without duplicates; '1,all' is accepted too."""
    if threads is None:
        threads = [1, "all"]
    if isinstance(threads, str):
        threads = [t.strip() for t in threads.split(",") if t.strip()]
    out: list[int] = []
    for t in threads:
        if str(t).lower() == "all":
            value = usable_cores()
        else:
            try:
                value = int(t)
            except ValueError:
                raise UnetqError(f"thread count '{t}' is not a number or 'all'") from None
            if value < 1:
                raise UnetqError(f"thread count must be at least 1, got {value}")
        if value not in out:
            out.append(value)
    return out


def bench_record(
    model_id: str,
    variant: str,
    job: ProbeJob,
    result: ProbeResult,
    n_images: int,
    memory: bool,
    session: str | None = None,
) -> BenchRecord:
    """The CSV row of one measured (model, variant, runtime, threads)."""
    lat = result.latency
    mem = result.memory if memory else None
    return BenchRecord(
        model_id=model_id,
        variant=variant,
        runtime=job.runtime,
        threads=job.threads,
        precision=result.precision,
        repeats=job.repeats,
        warmup=job.warmup,
        latency_ms_median=lat.median_ms,
        latency_ms_p95=lat.p95_ms,
        latency_ms_mean=lat.mean_ms,
        latency_ms_std=lat.std_ms,
        images_per_s=lat.images_per_s,
        size_bytes=artifact_size(job.artifact),
        rss_after_imports_mb=mem.rss_after_imports_mb if mem else None,
        rss_after_load_mb=mem.rss_after_load_mb if mem else None,
        peak_rss_mb=mem.peak_rss_mb if mem else None,
        model_memory_mb=mem.model_memory_mb if mem else None,
        latency_ms_min=lat.min_ms,
        bench_images=n_images,
        load_average_1m=result.load_average_1m,
        round_medians_ms=result.round_medians_ms or None,
        round_samples_ms=result.round_samples_ms or None,
        session=session,
    )


def bench_jobs(
    model_dir: Path, runtimes: list[str], threads: list[int], repeats: int, warmup: int, slow: int
) -> list[tuple[str, ProbeJob]]:
    """(variant, job) for every variant artifact x runtime x thread count of one model.

    Slow variants (int16x8 on reference kernels) get `slow` timed calls after one warm-up call
    and no warm-up call in later rounds.
    """
    jobs = []
    for run in variant_runs(model_dir, runtimes):
        r, w = (slow, min(warmup, 1)) if run.slow else (repeats, warmup)
        jobs += [
            (run.variant, ProbeJob(run.runtime, run.artifact, t, r, w, rewarm=not run.slow))
            for t in threads
        ]
    return jobs


def bench_run(
    run_dir: Path,
    cfg: Any,
    threads_list: list[int | str] | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    progress: Any = None,
    *,
    images: np.ndarray | None = None,
    n_images: int = 8,
    loader: str = DEFAULT_LOADER,
    remeasure: bool = False,
) -> Path:
    """Benchmark every (model, variant, runtime, threads) of run_dir; merge the average CSV.

    `images` (uint8 [N, H, W, 3], e.g. the test split) supplies the timed inputs; without it,
    seeded uniform images of cfg.data.image_size are used (latency of these dense models does
    not depend on pixel values). One model's measurements are interleaved in cfg.bench.rounds
    rounds (`measure_interleaved`). Finished measurements are part files in run_dir/.bench/; a
    rerun with the same settings on artifacts of the same content skips them (`remeasure`
    measures everything again).
    """
    run = RunFolder(run_dir)
    bench_cfg = cfg.bench
    threads = resolve_threads(threads_list if threads_list is not None else bench_cfg.threads)
    repeats = bench_cfg.repeats if repeats is None else repeats
    warmup = bench_cfg.warmup if warmup is None else warmup
    if repeats < 1 or warmup < 0:
        raise UnetqError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    model_ids = run.model_ids()
    if bench_cfg.models:
        model_ids = [m for m in model_ids if m in set(bench_cfg.models)]
    if not model_ids:
        raise UnetqError(f"no trained models to benchmark in {run.models_dir}")
    size = cfg.data.image_size
    timed = bench_images((size, size), n_images, source=images)
    plan = []  # (model_id, [(variant, job, part, params), ...], skipped) still to measure
    total = 0
    for model_id in model_ids:
        jobs = bench_jobs(
            run.model_dir(model_id),
            bench_cfg.runtimes,
            threads,
            repeats,
            warmup,
            bench_cfg.slow_variant_repeats,
        )
        todo = []
        for variant, job in jobs:
            part = run.bench_part(model_id, variant, job.runtime, job.threads)
            params = {
                "repeats": job.repeats,
                "warmup": job.warmup,
                "rounds": bench_cfg.rounds,
                "bench_images": len(timed),
                "image_size": size,
                "memory": bool(bench_cfg.memory),
                "artifact_sha256": artifact_digest(job.artifact),
            }
            if remeasure or read_json(part).get("params") != params:
                todo.append((variant, job, part, params))
        total += len(jobs)
        plan.append((model_id, todo, len(jobs) - len(todo)))
    if any(todo for _, todo, _ in plan) or not run.machine.exists():
        write_json(run.machine, machine_info())  # the machine of the measurements, not a reader
    task = progress.add_task("bench", total=total) if progress is not None else None
    failures: list[str] = []
    for model_id, todo, skipped in plan:
        if task is not None:
            progress.advance(task, skipped)
        if not todo:
            continue

        def on_block(job: ProbeJob, r: int, model_id=model_id) -> None:
            if task is not None:
                what = f"bench {model_id} round {r + 1}/{bench_cfg.rounds}"
                progress.update(task, description=f"{what} ({job.runtime}, {job.threads}t)")

        session = uuid.uuid4().hex[:12]
        results = measure_interleaved(
            [job for _, job, _, _ in todo],
            timed,
            bench_cfg.rounds,
            loader=loader,
            on_block=on_block,
        )
        for (variant, job, part, params), result in zip(todo, results, strict=True):
            if isinstance(result, UnetqError):
                failures.append(str(result))
                continue
            record = bench_record(
                model_id, variant, job, result, len(timed), bench_cfg.memory, session
            )
            write_json(part, {"params": params, "record": asdict(record)})
        if task is not None:
            progress.advance(task, len(todo))
    if task is not None:
        progress.remove_task(task)
    say_reused(progress, "bench", sum(len(todo) for _, todo, _ in plan), total)
    path = write_average_results(run.root)
    if failures:
        raise UnetqError(f"{len(failures)} of {total} measurements failed; first: {failures[0]}")
    return path
