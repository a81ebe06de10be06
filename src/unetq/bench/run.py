"""`unetq bench`: every (model, variant, runtime, threads) of a run folder, measured and merged.

Each measurement is a unit (unetq.work) whose record lies in the run folder's `.bench/`; a rerun
with the same settings on the same artifacts (compared by content) skips it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetq.bench.machine import machine_info
from unetq.bench.peaks import measure_in_child, with_peaks
from unetq.bench.probe import DEFAULT_LOADER, ProbeResult
from unetq.bench.session import ProbeJob, WholeImages, bench_images, measure_rounds
from unetq.bench.throughput import ThroughputStage
from unetq.errors import UnetqError
from unetq.fileio import write_json
from unetq.records import BenchRecord
from unetq.results import write_average_results
from unetq.runfolder import RunFolder, artifact_digest, artifact_size, read_json, variant_runs
from unetq.runtimes import usable_cores
from unetq.work import Failures, Stage, Unit, run_stage, write_record


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
    whole = result.whole_image_ms
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
        whole_images_timed=len(whole) or None,
        whole_image_ms_mean=float(np.mean(whole)) if whole else None,
        whole_image_tiles_mean=float(np.mean(result.whole_image_tiles)) if whole else None,
    )


def bench_jobs(
    model_dir: Path, runtimes: list[str], threads: list[int], repeats: int, warmup: int, slow: int
) -> list[tuple[str, ProbeJob]]:
    """(variant, job) for every variant artifact x runtime x thread count of one model.

    Slow variants (int16x8 on reference kernels) get `slow` timed calls after one warm-up call,
    no warm-up call in later rounds and no whole images.
    """
    jobs = []
    for run in variant_runs(model_dir, runtimes):
        r, w = (slow, min(warmup, 1)) if run.slow else (repeats, warmup)
        fast = not run.slow  # whole images on reference kernels would take minutes
        jobs += [
            (run.variant, ProbeJob(run.runtime, run.artifact, t, r, w, rewarm=fast, whole=fast))
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
    rounds (`measure_interleaved`). Finished measurements are units (unetq.work) whose records
    lie in run_dir/.bench/; a rerun with the same settings on artifacts of the same content
    skips them (`remeasure` measures everything again). Then throughput (bench.throughput) at
    the largest of those thread counts, unless cfg.bench.throughput_batches is empty.
    """
    bench_cfg = cfg.bench
    repeats = bench_cfg.repeats if repeats is None else repeats
    warmup = bench_cfg.warmup if warmup is None else warmup
    if repeats < 1 or warmup < 0:
        raise UnetqError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    size = cfg.data.image_size
    timed = bench_images((size, size), n_images, source=images)
    stage = BenchStage(
        root=Path(run_dir),
        cfg=bench_cfg,
        threads=resolve_threads(threads_list if threads_list is not None else bench_cfg.threads),
        repeats=repeats,
        warmup=warmup,
        image_size=size,
        images=timed,
        loader=loader,
        whole=whole_images(RunFolder(run_dir), bench_cfg.rounds),
    )
    path = run_stage(stage, progress, redo=remeasure)
    if bench_cfg.throughput_batches:
        threads = max(stage.threads)
        throughput = ThroughputStage(Path(run_dir), bench_cfg, size, timed, threads, loader)
        path = run_stage(throughput, progress, redo=remeasure)
    return path


def whole_images(run: RunFolder, rounds: int, seed: int = 0) -> WholeImages | None:
    """Tile mode: seeded uniform uint8 images at sizes dataset.json samples from the evaluated
    split (`whole_sizes`), at most one per round, spread over the sample; None otherwise."""
    dataset = read_json(run.dataset)
    sizes = dataset.get("whole_sizes")
    if dataset.get("mode") != "tile" or not sizes or "tile" not in dataset:
        return None
    picks = np.linspace(0, len(sizes) - 1, min(len(sizes), max(rounds, 1))).round().astype(int)
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (*sizes[i], 3), dtype=np.uint8) for i in picks]
    return WholeImages(images, int(dataset["tile"]), int(dataset.get("tile_overlap", 0)))


@dataclass
class BenchStage(Stage):
    """Benchmarking as a stage: a unit per (model, variant, runtime, threads), a group per model
    (its measurements take turns in rounds)."""

    root: Path
    cfg: Any  # BenchConfig
    threads: list[int]
    repeats: int
    warmup: int
    image_size: int
    images: np.ndarray  # the timed inputs
    loader: str = DEFAULT_LOADER
    whole: WholeImages | None = None  # tile mode: whole images timed end to end

    name = "bench"
    tolerant = True  # a measurement that fails is reported; the others go on

    def units(self) -> list[Unit]:
        run = RunFolder(self.root)
        model_ids = run.model_ids()
        if self.cfg.models:
            model_ids = [m for m in model_ids if m in set(self.cfg.models)]
        if not model_ids:
            raise UnetqError(f"no trained models to benchmark in {run.models_dir}")
        units = []
        cfg = self.cfg
        for model_id in model_ids:
            jobs = self._jobs(model_id)
            for variant, job in jobs:
                inputs = {
                    "repeats": job.repeats,
                    "warmup": job.warmup,
                    "rounds": cfg.rounds,
                    "bench_images": len(self.images),
                    "image_size": self.image_size,
                    "memory": bool(cfg.memory),
                    "artifact_sha256": artifact_digest(job.artifact),
                }
                if self.whole is not None and job.whole:
                    inputs["whole_sizes"] = [list(i.shape[:2]) for i in self.whole.images]
                    inputs["whole_tiles"] = [self.whole.tile, self.whole.overlap]
                part = run.bench_part(model_id, variant, job.runtime, job.threads)
                key = (model_id, variant, job.runtime, job.threads)
                units.append(Unit(key, part, inputs, group=model_id))
        return units

    def _jobs(self, model_id: str) -> list[tuple[str, ProbeJob]]:
        cfg = self.cfg
        model_dir = RunFolder(self.root).model_dir(model_id)
        args = (cfg.runtimes, self.threads, self.repeats, self.warmup, cfg.slow_variant_repeats)
        return bench_jobs(model_dir, *args)

    def prepare(self, todo: list[Unit]) -> None:
        """machine.json: the machine of the measurements (not of a later reader), with its
        peaks (bench.peaks) measured alone, before the latencies."""
        machine = RunFolder(self.root).machine
        if todo or not machine.exists():
            info = machine_info()
            if self.cfg.peaks != "off":
                info = with_peaks(info, measure_in_child(self.threads, self.cfg.peaks))
            write_json(machine, info)

    def run(self, group: list[Unit], progress: Any = None) -> Failures:
        model_id = group[0].group
        jobs = {(variant, job.runtime, job.threads): job for variant, job in self._jobs(model_id)}
        todo = [(unit, jobs[unit.key[1:]]) for unit in group]
        results, session = measure_rounds(
            f"bench {model_id}",
            [job for _, job in todo],
            self.images,
            self.cfg.rounds,
            progress,
            lambda job: f"{job.runtime}, {job.threads}t",
            loader=self.loader,
            whole=self.whole,
        )
        failures: Failures = {}
        for (unit, job), result in zip(todo, results, strict=True):
            if isinstance(result, UnetqError):
                failures[unit.key] = str(result)
                continue
            memory = self.cfg.memory
            record = bench_record(
                model_id, unit.key[1], job, result, len(self.images), memory, session
            )
            write_record(unit, record=asdict(record))
        return failures

    def merge(self, units: list[Unit], failures: Failures) -> Path:
        """model_performance_average_results.csv; then one line for failed measurements."""
        path = write_average_results(self.root)
        if failures:
            first = next(iter(failures.values()))
            raise UnetqError(f"{len(failures)} of {len(units)} measurements failed; first: {first}")
        return path
