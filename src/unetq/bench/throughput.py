"""Throughput: images per second over streams of images, at every usable core (or the largest
thread count the bench measures latency at, so every figure has its latency row).

Latency is one image per call; a folder of images can go faster in batches (keras, LiteRT and
OpenVINO with a batch dimension) or, on OpenVINO, in asynchronous requests that its THROUGHPUT
hint runs side by side in streams. For each variant of the best model and each such setting, a
fresh probe process segments a stream of images per round; the settings of one model take turns
in rounds as the latency measurements do (`measure_interleaved`), so a slow spell of the machine
hits them all alike. The best setting per variant goes to the average CSV
(`results.add_throughput`), every setting to throughput_results.csv.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetq.bench.probe import DEFAULT_LOADER, ProbeResult
from unetq.bench.session import ProbeJob, measure_rounds
from unetq.errors import UnetqError
from unetq.records import ThroughputRecord
from unetq.results import best_model_id, latency_interval, write_average_results
from unetq.runfolder import RunFolder, artifact_digest, variant_runs
from unetq.runtimes import Setting
from unetq.work import Failures, Stage, Unit, write_record


def settings(runtime: str, batches: list[int]) -> list[Setting]:
    """The settings a runtime is measured at: each batch size, and openvino's asynchronous
    requests."""
    out = [Setting(b) for b in dict.fromkeys(batches)]
    return out + [Setting(1, True)] if runtime == "openvino" and out else out


def throughput_jobs(
    model_dir: Path, runtimes: list[str], batches: list[int], images: int, threads: int, rounds: int
) -> list[tuple[str, ProbeJob]]:
    """(variant, job) for every fast variant x setting of one model, one stream a round.

    Slow variants (int16x8 on reference kernels) are left out: a stream would take minutes."""
    jobs = []
    for run in variant_runs(model_dir, runtimes):
        if run.slow:
            continue
        for setting in settings(run.runtime, batches):
            job = ProbeJob(
                run.runtime, run.artifact, threads, repeats=rounds, warmup=1, whole=False,
                stream=images, setting=setting,
            )  # fmt: skip
            jobs.append((run.variant, job))
    return jobs


def throughput_record(
    model_id: str, variant: str, job: ProbeJob, result: ProbeResult, rounds: int, session: str
) -> ThroughputRecord:
    """The throughput_results.csv row of one measured setting."""
    per_round = [b[0] if b else None for b in result.round_samples_ms]
    timed = [m for m in per_round if m]
    median_ms = float(np.median(timed))
    low_ms, high_ms = latency_interval([[m] for m in timed])
    mem = result.memory
    return ThroughputRecord(
        model_id=model_id,
        variant=variant,
        runtime=job.runtime,
        threads=result.threads,
        setting=job.setting.name,
        batch=result.batch,
        precision=result.precision,
        images_per_round=job.stream,
        rounds=rounds,
        images_per_s=1000.0 / median_ms,
        images_per_s_ci95_low=1000.0 / high_ms if high_ms == high_ms else None,
        images_per_s_ci95_high=1000.0 / low_ms if low_ms == low_ms else None,
        ms_per_image_rounds=per_round,
        peak_rss_mb=mem.peak_rss_mb,
        model_memory_mb=mem.model_memory_mb,
        load_average_1m=result.load_average_1m,
        session=session,
    )


def failed_record(model_id: str, variant: str, job: ProbeJob, error: str) -> ThroughputRecord:
    """A setting the model cannot run: kept with its reason (throughput_results.csv shows it),
    and not tried again unless its inputs change (`unetq bench --remeasure`)."""
    return ThroughputRecord(
        model_id=model_id,
        variant=variant,
        runtime=job.runtime,
        threads=job.threads,
        setting=job.setting.name,
        batch=job.setting.batch,
        precision="",
        images_per_round=job.stream,
        rounds=0,
        images_per_s=float("nan"),
        images_per_s_ci95_low=None,
        images_per_s_ci95_high=None,
        ms_per_image_rounds=[],
        error=error,
    )


@dataclass
class ThroughputStage(Stage):
    """Throughput as a stage: a unit per (model, variant, runtime, threads, setting), a group
    per model (its settings take turns in rounds)."""

    root: Path
    cfg: Any  # BenchConfig
    image_size: int
    images: np.ndarray  # the streamed inputs, float32 [N, 1, H, W, 3]
    threads: int  # the largest count latency is measured at: every usable core by default
    loader: str = DEFAULT_LOADER

    name = "throughput"
    tolerant = True  # a setting that fails (a model without a batch dimension) is reported

    def model_ids(self) -> list[str]:
        run = RunFolder(self.root)
        chosen = self.cfg.throughput_models
        if chosen is None:
            best = best_model_id(run)
            chosen = [best] if best is not None else run.model_ids()
        if self.cfg.models:
            chosen = [m for m in chosen if m in set(self.cfg.models)]
        return [m for m in chosen if m in set(run.model_ids())]

    def units(self) -> list[Unit]:
        run = RunFolder(self.root)
        units = []
        for model_id in self.model_ids():
            for variant, job in self._jobs(model_id):
                inputs = {
                    "images_per_round": job.stream,
                    "rounds": self.cfg.rounds,
                    "bench_images": len(self.images),
                    "image_size": self.image_size,
                    "artifact_sha256": artifact_digest(job.artifact),
                }
                setting = job.setting.name
                part = run.throughput_part(model_id, variant, job.runtime, job.threads, setting)
                key = (model_id, variant, job.runtime, job.threads, setting)
                units.append(Unit(key, part, inputs, group=model_id))
        return units

    def _jobs(self, model_id: str) -> list[tuple[str, ProbeJob]]:
        cfg = self.cfg
        model_dir = RunFolder(self.root).model_dir(model_id)
        batches, images = cfg.throughput_batches, cfg.throughput_images
        return throughput_jobs(model_dir, cfg.runtimes, batches, images, self.threads, cfg.rounds)

    def run(self, group: list[Unit], progress: Any = None) -> Failures:
        model_id = group[0].group
        jobs = {
            (variant, job.runtime, job.threads, job.setting.name): job
            for variant, job in self._jobs(model_id)
        }
        todo = [(unit, jobs[unit.key[1:]]) for unit in group]
        rounds = self.cfg.rounds
        results, session = measure_rounds(
            f"throughput {model_id}",
            [job for _, job in todo],
            self.images,
            rounds,
            progress,
            lambda job: f"{job.runtime}, {job.setting.name}",
            loader=self.loader,
        )
        for (unit, job), result in zip(todo, results, strict=True):
            if isinstance(result, UnetqError):  # e.g. a model whose batch dimension is fixed
                record = failed_record(model_id, unit.key[1], job, str(result))
            else:
                record = throughput_record(model_id, unit.key[1], job, result, rounds, session)
            write_record(unit, record=asdict(record))
        return {}

    def merge(self, units: list[Unit], failures: Failures) -> Path:
        return write_average_results(self.root)
