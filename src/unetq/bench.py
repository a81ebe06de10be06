"""Latency, memory and size of every (model, variant, runtime, threads), measured honestly.

Every measurement runs in a fresh child process (`python -m unetq.bench --probe ...`) that
imports only what its runtime needs, loads the model with a given thread count, warms up, times
only `predictor.run` with `time.perf_counter_ns`, and reads the peak resident set (VmHWM) after
imports, after loading and after inference. One process per measurement isolates runtimes from
each other and lets TensorFlow take a new thread setting each time (it accepts one per process).

This module is also the child's entry point, so its top level imports numpy and the standard
library only: the probe must not pay for TensorFlow or pandas when it measures LiteRT.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetq.errors import UnetqError
from unetq.fileio import atomic_path, write_json
from unetq.records import BenchRecord

MB = 1024 * 1024  # memory is reported in MiB, called MB in column names
PROBE_MARK = "UNETQ_PROBE_JSON "
READY_MARK = "UNETQ_PROBE_READY "
SAMPLES_MARK = "UNETQ_PROBE_SAMPLES "
DEFAULT_LOADER = "unetq.runtimes:load_predictor"
BENCH_DIR = ".bench"
AVERAGE_CSV = "model_performance_average_results.csv"
# Imported before the "after imports" reading, so the model's cost excludes the libraries.
RUNTIME_IMPORTS = {
    "keras": ("tensorflow", "keras"),
    "litert": ("ai_edge_litert.interpreter",),
    "openvino": ("openvino",),
}
ISA_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
PACKAGES = (
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "ai-edge-litert",
    "openvino",
    "nncf",
    "numpy",
    "unetq",
)


# --- statistics ------------------------------------------------------------------------------


@dataclass
class LatencyStats:
    """Per-call latency of timed model calls, in milliseconds."""

    median_ms: float
    p95_ms: float
    mean_ms: float
    std_ms: float  # sample standard deviation (ddof=1); 0 for a single sample
    min_ms: float
    images_per_s: float  # 1000 / mean_ms: throughput of back-to-back single-image calls
    samples_ms: list[float] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray) -> LatencyStats:
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError("no latency samples")
        mean = float(s.mean())
        return cls(
            median_ms=float(np.median(s)),
            p95_ms=float(np.percentile(s, 95)),
            mean_ms=mean,
            std_ms=float(s.std(ddof=1)) if s.size > 1 else 0.0,
            min_ms=float(s.min()),
            images_per_s=1000.0 / mean if mean > 0 else float("inf"),
            samples_ms=[float(x) for x in s],
        )


@dataclass
class MemoryStats:
    """Resident-set readings of one fresh process, in MB (MiB)."""

    rss_after_imports_mb: float
    rss_after_load_mb: float
    peak_rss_mb: float
    model_memory_mb: float  # peak_rss_mb - rss_after_imports_mb


@dataclass
class ProbeResult:
    runtime: str
    threads: int
    precision: str
    input_hw: list[int] | None
    memory: MemoryStats
    latency: LatencyStats | None
    tensorflow_imported: bool  # whether TensorFlow was loaded in the child at all
    load_average_1m: float | None = None  # machine load when timing began
    # per round of measure_interleaved: the median of this job's block (None: no block)
    round_medians_ms: list[float | None] = field(default_factory=list)


def time_predictor(predictor: Any, images: np.ndarray, repeats: int, warmup: int) -> LatencyStats:
    """Warm up, then time `repeats` calls of predictor.run only.

    `images` is float32 [N, 1, H, W, 3] (or [N, H, W, 3]); calls cycle through them in order
    from the first, so every variant sees the same images in the same order.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4:
        images = images[:, None]
    n = len(images)
    if n == 0:
        raise ValueError("no images to time")
    for i in range(warmup):
        predictor.run(images[i % n])
    samples = np.empty(repeats, dtype=np.float64)
    clock = time.perf_counter_ns
    for i in range(repeats):
        x = images[i % n]
        t0 = clock()
        predictor.run(x)
        samples[i] = (clock() - t0) / 1e6
    return LatencyStats.from_samples(samples)


# --- resident-set readings ---------------------------------------------------------------------


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; fallback ru_maxrss) in MB."""
    value = _status_mb("VmHWM")
    if value is not None:
        return value
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MB if sys.platform == "darwin" else maxrss / 1024.0  # bytes vs kB


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident set (Linux clear_refs); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --- the child process -------------------------------------------------------------------------


def _load_callable(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "load_predictor")


def _probe(args: argparse.Namespace) -> dict[str, Any]:
    images = np.load(args.images) if args.images else None
    if args.loader == DEFAULT_LOADER:  # another loader imports what it needs itself
        for module in RUNTIME_IMPORTS.get(args.runtime, ()):
            importlib.import_module(module)
    loader = None if args.runtime == "none" else _load_callable(args.loader)
    # The baseline: after imports, with the high-water mark reset where the kernel allows it,
    # so a transient peak while importing does not hide the model's cost.
    reset_peak_rss()
    after_imports = peak_rss_mb()
    keep: list[Any] = []
    precision, input_hw = "none", None
    if args.allocate_mb:
        block = np.ones(int(args.allocate_mb * MB) // 8)  # written, so every page is resident
        keep.append(block)
    if loader is not None:
        predictor = loader(
            args.runtime, Path(args.artifact), threads=args.threads, precision=args.precision
        )
        keep.append(predictor)
        precision = str(getattr(predictor, "precision", None) or "unknown")
        input_hw = list(getattr(predictor, "input_hw", None) or []) or None
    after_load = peak_rss_mb()
    latency, load = None, None
    if loader is not None:
        if images is None:
            if input_hw is None:
                raise UnetqError("the predictor does not say its input size; pass images")
            rng = np.random.default_rng(0)
            images = rng.random((max(args.infer, 1), 1, *input_hw, 3), dtype=np.float32)
        if input_hw is not None and list(images.shape[2:4]) != input_hw:
            raise UnetqError(
                f"bench images are {images.shape[2]}x{images.shape[3]} but {args.artifact} "
                f"expects {input_hw[0]}x{input_hw[1]}"
            )
        load = _load_average()
        if args.serve:
            latency, load = _serve(predictor, images, after_load)
        elif args.repeats > 0:
            latency = time_predictor(predictor, images, args.repeats, args.warmup)
        else:
            for i in range(args.infer):
                predictor.run(images[i % len(images)])
    peak = peak_rss_mb()
    memory = MemoryStats(
        rss_after_imports_mb=after_imports,
        rss_after_load_mb=after_load,
        peak_rss_mb=peak,
        model_memory_mb=peak - after_imports,
    )
    return {
        "runtime": args.runtime,
        "threads": args.threads,
        "precision": precision,
        "input_hw": input_hw,
        "memory": asdict(memory),
        "latency": asdict(latency) if latency is not None else None,
        "tensorflow_imported": "tensorflow" in sys.modules,
        "load_average_1m": load[0] if load else None,
    }


def _serve(predictor: Any, images: np.ndarray, after_load: float):
    """Time blocks of calls on the parent's command, so it can interleave several probes.

    Protocol (one line each): the child says `READY`; the parent sends `time N W` (W warm-up
    calls, then N timed ones; the child answers `SAMPLES [ms, ...]`) any number of times, then
    `done`. Each block's timed calls continue the image cycle where the last block's stopped; its
    warm-up calls use the block's first images.
    """
    print(f"{READY_MARK}{json.dumps({'rss_after_load_mb': after_load})}", flush=True)
    samples: list[float] = []
    load = None
    start = 0
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "done":
            break
        if command[0] != "time" or len(command) != 3:
            raise UnetqError(f"unknown probe command: {line.strip()}")
        repeats, warmup = int(command[1]), int(command[2])
        load = load or _load_average()
        cycled = np.roll(images, -start, axis=0)
        block = time_predictor(predictor, cycled, repeats, warmup).samples_ms
        start = (start + repeats) % len(images)
        samples += block
        print(f"{SAMPLES_MARK}{json.dumps(block)}", flush=True)
    if not samples:
        raise UnetqError("the parent asked for no timed calls")
    return LatencyStats.from_samples(samples), load


def _probe_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unetq.bench", description="unetq measurement probe")
    p.add_argument("--probe", action="store_true", required=True)
    p.add_argument("--runtime", required=True, help="keras, litert, openvino, or none")
    p.add_argument("--artifact", default="")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default=None)
    p.add_argument("--images", default=None, help=".npy of float32 [N, 1, H, W, 3]")
    p.add_argument("--repeats", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--infer", type=int, default=3, help="calls after loading when not timing")
    p.add_argument("--loader", default=DEFAULT_LOADER, help="module:function that loads")
    p.add_argument("--allocate-mb", type=float, default=0.0, help="allocate a known block (test)")
    p.add_argument("--serve", action="store_true", help="time blocks on stdin commands")
    return p


def probe_main(argv: list[str] | None = None) -> int:
    import signal

    # Ctrl-C reaches the whole process group: the parent stops its probes itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = _probe_parser().parse_args(argv)
    try:
        result = _probe(args)
    except Exception as exc:  # the parent shows this last stderr line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not isinstance(exc, UnetqError):  # a user-facing error already says what and where
            message = f"{type(exc).__name__}: {message}"
        print(f"probe error: {message}", file=sys.stderr, flush=True)
        return 1
    sys.stdout.write(PROBE_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# --- the parent side ---------------------------------------------------------------------------


def _probe_command(
    runtime: str,
    artifact: Path | str | None,
    threads: int,
    *,
    repeats: int = 0,
    warmup: int = 0,
    infer: int = 3,
    precision: str | None = None,
    loader: str = DEFAULT_LOADER,
    allocate_mb: float = 0.0,
    images_path: Path | None = None,
) -> list[str]:
    cmd = [sys.executable, "-m", "unetq.bench", "--probe", "--runtime", runtime]
    cmd += ["--artifact", str(artifact or ""), "--threads", str(int(threads))]
    cmd += ["--repeats", str(repeats), "--warmup", str(warmup), "--infer", str(infer)]
    cmd += ["--loader", loader, "--allocate-mb", str(allocate_mb)]
    if precision:
        cmd += ["--precision", precision]
    if images_path is not None:
        cmd += ["--images", str(images_path)]
    return cmd


def _probe_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _probe_failure(what: str, threads: int, code: int | None, stderr: str) -> UnetqError:
    last = next((ln for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    return UnetqError(
        f"bench probe failed for {what} (threads={threads}, exit {code}): "
        f"{last.strip() or 'no error message'}"
    )


def _probe_result(data: dict[str, Any]) -> ProbeResult:
    return ProbeResult(
        runtime=data["runtime"],
        threads=data["threads"],
        precision=data["precision"],
        input_hw=data["input_hw"],
        memory=MemoryStats(**data["memory"]),
        latency=LatencyStats(**data["latency"]) if data["latency"] else None,
        tensorflow_imported=bool(data["tensorflow_imported"]),
        load_average_1m=data.get("load_average_1m"),
    )


def run_probe(
    runtime: str,
    artifact: Path | str | None,
    threads: int = 1,
    *,
    images: np.ndarray | None = None,
    repeats: int = 0,
    warmup: int = 0,
    infer: int = 3,
    precision: str | None = None,
    loader: str = DEFAULT_LOADER,
    allocate_mb: float = 0.0,
    timeout: float | None = None,
) -> ProbeResult:
    """Measure in a fresh child process; `images` float32 [N, 1, H, W, 3] (uint8 is scaled)."""
    with tempfile.TemporaryDirectory(prefix="unetq-probe-") as tmp:
        images_path = None
        if images is not None:
            images_path = Path(tmp) / "images.npy"
            np.save(images_path, as_model_input(images))
        cmd = _probe_command(
            runtime,
            artifact,
            threads,
            repeats=repeats,
            warmup=warmup,
            infer=infer,
            precision=precision,
            loader=loader,
            allocate_mb=allocate_mb,
            images_path=images_path,
        )
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=_probe_env(), timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise UnetqError(
                f"bench probe for {runtime} {artifact} took longer than {timeout} s"
            ) from None
    what = f"{runtime} on {artifact}" if artifact else runtime
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(PROBE_MARK)]
    if proc.returncode != 0 or not lines:
        raise _probe_failure(what, threads, proc.returncode, proc.stderr)
    return _probe_result(json.loads(lines[-1][len(PROBE_MARK) :]))


@dataclass
class ProbeJob:
    """One latency measurement: `repeats` timed calls after `warmup` untimed ones."""

    runtime: str
    artifact: Path
    threads: int
    repeats: int
    warmup: int
    precision: str | None = None
    rewarm: bool = True  # one untimed call before each later block (not worth it for slow ones)


class _ServedProbe:
    """A probe child that stays alive between timing blocks (see `_serve`)."""

    def __init__(self, job: ProbeJob, images_path: Path, loader: str):
        self.job = job
        self.what = f"{job.runtime} on {job.artifact}"
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        cmd = _probe_command(
            job.runtime,
            job.artifact,
            job.threads,
            infer=0,
            precision=job.precision,
            loader=loader,
            images_path=images_path,
        )
        self.proc = subprocess.Popen(
            [*cmd, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=_probe_env(),
        )

    def _read(self, mark: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(mark):
                return line[len(mark) :]
        raise self._failure()

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._failure() from None

    def _failure(self) -> UnetqError:
        code = self.proc.wait()
        self._stderr.seek(0)
        return _probe_failure(self.what, self.job.threads, code, self._stderr.read())

    def ready(self) -> None:
        self._read(READY_MARK)

    def time(self, repeats: int, warmup: int) -> list[float]:
        self._send(f"time {repeats} {warmup}")
        return json.loads(self._read(SAMPLES_MARK))

    def finish(self) -> ProbeResult:
        self._send("done")
        data = json.loads(self._read(PROBE_MARK))
        self.proc.wait()
        return _probe_result(data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            with contextlib.suppress(OSError):
                stream.close()


def split_repeats(repeats: int, rounds: int) -> list[int]:
    """Timed calls per round: as even as possible, the first rounds taking the remainder."""
    base, extra = divmod(repeats, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def measure_interleaved(
    jobs: list[ProbeJob],
    images: np.ndarray,
    rounds: int = 5,
    *,
    loader: str = DEFAULT_LOADER,
    on_block: Callable[[ProbeJob, int], None] | None = None,
) -> list[ProbeResult | UnetqError]:
    """Time several jobs in rounds, each job in its own fresh process, one process at a time.

    Every process loads its model first (at once, untimed); then each round gives every job a
    block of its timed calls in turn (the first block after the job's warm-up, later blocks
    after one untimed call, since other processes have run in between). A slow spell of the
    machine thus hits every job a little instead of one job entirely, which is what makes two
    runs agree. Memory readings stay per process. Results are in job order; a job that fails
    gives its UnetqError in place of a result.
    """
    results: dict[int, ProbeResult | UnetqError] = {}
    probes: dict[int, _ServedProbe] = {}
    round_medians: dict[int, list[float | None]] = {i: [] for i in range(len(jobs))}
    with tempfile.TemporaryDirectory(prefix="unetq-probe-") as tmp:
        images_path = Path(tmp) / "images.npy"
        np.save(images_path, as_model_input(images))
        try:
            for i, job in enumerate(jobs):
                probes[i] = _ServedProbe(job, images_path, loader)

            def attempt(i: int, action: Callable[[_ServedProbe], Any]) -> Any:
                try:
                    return action(probes[i])
                except UnetqError as exc:
                    results[i] = exc
                    probes.pop(i).close()
                    return None

            for i in list(probes):
                attempt(i, _ServedProbe.ready)
            plans = {i: split_repeats(jobs[i].repeats, rounds) for i in probes}
            for r in range(rounds):
                for i in list(probes):
                    job, calls = jobs[i], plans[i][r]
                    if not calls:
                        round_medians[i].append(None)
                        continue
                    warmup = job.warmup if r == 0 else min(job.warmup, int(job.rewarm))
                    block = attempt(i, lambda p, n=calls, w=warmup: p.time(n, w))
                    round_medians[i].append(float(np.median(block)) if block else None)
                    if on_block is not None:
                        on_block(job, r)
            for i in list(probes):
                result = attempt(i, _ServedProbe.finish)
                if result is not None:
                    result.round_medians_ms = round_medians[i]
                    results[i] = result
        finally:
            for probe in probes.values():
                probe.close()
    return [results[i] for i in range(len(jobs))]


def as_model_input(images: np.ndarray) -> np.ndarray:
    """float32 [N, 1, H, W, 3] in [0, 1] from uint8 or float images [N, H, W, 3] / [N,1,H,W,3]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32, copy=False)
    if images.ndim == 4:
        images = images[:, None]
    if images.ndim != 5 or images.shape[1] != 1 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] or [N, 1, H, W, 3], got {images.shape}")
    return np.ascontiguousarray(images)


def measure_memory(
    runtime: str,
    artifact: Path | str,
    threads: int,
    image_hw: tuple[int, int],
    *,
    precision: str | None = None,
    infer: int = 3,
    loader: str = DEFAULT_LOADER,
) -> MemoryStats:
    """Resident set of a fresh process that imports the runtime, loads, runs `infer` images."""
    rng = np.random.default_rng(0)
    images = rng.random((max(infer, 1), 1, *image_hw, 3), dtype=np.float32)
    result = run_probe(
        runtime, artifact, threads, images=images, infer=infer, precision=precision, loader=loader
    )
    return result.memory


def bench_images(
    image_hw: tuple[int, int], n: int = 8, source: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """The timed inputs, float32 [n, 1, H, W, 3]: the first n of `source`, else seeded uniform."""
    if source is not None and len(source):
        return as_model_input(np.asarray(source)[:n])
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, *image_hw, 3), dtype=np.float32)


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
        size_bytes=Path(job.artifact).stat().st_size,
        rss_after_imports_mb=mem.rss_after_imports_mb if mem else None,
        rss_after_load_mb=mem.rss_after_load_mb if mem else None,
        peak_rss_mb=mem.peak_rss_mb if mem else None,
        model_memory_mb=mem.model_memory_mb if mem else None,
        latency_ms_min=lat.min_ms,
        bench_images=n_images,
        load_average_1m=result.load_average_1m,
        round_medians_ms=result.round_medians_ms or None,
        session=session,
    )


def bench_jobs(
    model_dir: Path, runtimes: list[str], threads: list[int], repeats: int, warmup: int, slow: int
) -> list[tuple[str, ProbeJob]]:
    """(variant, job) for every variant artifact x runtime x thread count of one model.

    Slow variants (int16x8 on reference kernels) get `slow` timed calls after one warm-up call
    and no warm-up call in later rounds.
    """
    from unetq.evaluate import variant_runs

    jobs = []
    for variant, runtime, artifact, is_slow in variant_runs(
        model_dir, runtimes, openvino="openvino" in runtimes
    ):
        r, w = (slow, min(warmup, 1)) if is_slow else (repeats, warmup)
        jobs += [
            (variant, ProbeJob(runtime, artifact, t, r, w, rewarm=not is_slow)) for t in threads
        ]
    return jobs


def bench_part_path(run_dir: Path, model_id: str, variant: str, runtime: str, threads: int) -> Path:
    return Path(run_dir) / BENCH_DIR / model_id / f"{variant}@{runtime}@t{threads}.json"


def _read_part(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
    rounds (`measure_interleaved`). Finished measurements are part files in run_dir/.bench/ and
    a rerun with the same settings skips them (`remeasure` measures everything again).
    """
    from unetq.evaluate import model_dirs

    run_dir = Path(run_dir)
    bench_cfg = cfg.bench
    threads = resolve_threads(threads_list if threads_list is not None else bench_cfg.threads)
    repeats = bench_cfg.repeats if repeats is None else repeats
    warmup = bench_cfg.warmup if warmup is None else warmup
    if repeats < 1 or warmup < 0:
        raise UnetqError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    dirs = model_dirs(run_dir)
    if bench_cfg.models:
        dirs = [d for d in dirs if d.name in set(bench_cfg.models)]
    if not dirs:
        raise UnetqError(f"no trained models to benchmark in {run_dir / 'models'}")
    write_json(run_dir / "machine.json", machine_info())
    size = cfg.data.image_size
    timed = bench_images((size, size), n_images, source=images)
    plan = []  # (model_id, [(variant, job, part, params), ...]) still to measure
    total = 0
    for model_dir in dirs:
        todo = []
        jobs = bench_jobs(
            model_dir, bench_cfg.runtimes, threads, repeats, warmup, bench_cfg.slow_variant_repeats
        )
        for variant, job in jobs:
            part = bench_part_path(run_dir, model_dir.name, variant, job.runtime, job.threads)
            params = {
                "repeats": job.repeats,
                "warmup": job.warmup,
                "rounds": bench_cfg.rounds,
                "bench_images": len(timed),
                "image_size": size,
                "memory": bool(bench_cfg.memory),
            }
            done = _read_part(part)
            fresh = done is not None and part.stat().st_mtime >= job.artifact.stat().st_mtime
            if remeasure or not (fresh and done.get("params") == params):
                todo.append((variant, job, part, params))
        total += len(jobs)
        plan.append((model_dir.name, todo, len(jobs) - len(todo)))
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
    path = write_average_results(run_dir)
    if failures:
        raise UnetqError(f"{len(failures)} of {total} measurements failed; first: {failures[0]}")
    return path


def read_bench_records(run_dir: Path) -> list[dict[str, Any]]:
    """BenchRecords (as dicts) of the run's part files, for models still in run_dir/models."""
    run_dir = Path(run_dir)
    models = run_dir / "models"
    rows = []
    for path in sorted((run_dir / BENCH_DIR).glob("*/*.json")):
        if not (models / path.parent.name).is_dir():
            continue
        part = _read_part(path)
        if part and isinstance(part.get("record"), dict):
            rows.append(part["record"])
    return rows


def write_average_results(run_dir: Path) -> Path:
    """Merge accuracy (individual CSV) and bench parts into model_performance_average_results.csv.

    One row per (model, variant, runtime, threads), or per (model, variant, runtime) with empty
    bench columns when only accuracy exists. The study's columns come first: Model, Epoch,
    Filters, Normalization, Quantization, Execution_time (s per image = median latency),
    Memory_usage (model_memory_mb, MB), IoU_score and Dice_score (foreground IoU/Dice, the
    correct metric; the study's border-class figures are seed_iou/seed_dice). Callable after
    evaluate and bench in either order.
    """
    import pandas as pd

    from unetq.evaluate import (
        INDIVIDUAL_CSV,
        KEYS,
        artifact_for,
        read_individual_results,
        summarize,
        with_study_columns,
    )

    run_dir = Path(run_dir)
    frame = read_individual_results(run_dir / INDIVIDUAL_CSV)
    acc = summarize(frame) if not frame.empty else pd.DataFrame()
    bench = pd.DataFrame(read_bench_records(run_dir))
    if acc.empty and bench.empty:
        raise UnetqError(f"nothing to merge in {run_dir}: run `unetq evaluate` or `unetq bench`")
    if bench.empty:
        df = acc.assign(threads=np.nan)
    elif acc.empty:
        df = bench
    else:
        df = bench.merge(acc, on=KEYS, how="outer")
    df = _fill_sizes(df, run_dir, artifact_for)
    df = _add_speedup(df)
    df = _sort(df)
    trained_path = run_dir / "trained_models_info.csv"
    trained = pd.read_csv(trained_path) if trained_path.exists() else None
    df = with_study_columns(df.reset_index(drop=True), trained)
    study = pd.DataFrame(
        {
            "Execution_time": df.get("latency_ms_median", np.nan) / 1000.0,
            "Memory_usage": df.get("model_memory_mb", np.nan),
            "IoU_score": df.get("fg_iou", np.nan),
            "Dice_score": df.get("fg_dice", np.nan),
        },
        index=df.index,
    )
    df = pd.concat([df.iloc[:, :5], study, df.iloc[:, 5:]], axis=1)
    # The original notebook's average CSV used these names for the same quantities.
    for col in ["Execution_time", "Memory_usage", "IoU_score", "Dice_score"]:
        df[f"Average_{col}"] = df[col]
    path = run_dir / AVERAGE_CSV
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def _fill_sizes(df, run_dir: Path, artifact_for):
    if "size_bytes" not in df:
        df["size_bytes"] = np.nan
    missing = df["size_bytes"].isna()
    for i in df.index[missing]:
        try:
            path = artifact_for(
                Path(run_dir) / "models" / str(df.at[i, "model_id"]), df.at[i, "variant"]
            )
            df.at[i, "size_bytes"] = path.stat().st_size
        except Exception:  # registry or file gone: leave the size empty
            continue
    return df


def _add_speedup(df):
    """Ratios to keras at the same model and thread count.

    speedup_vs_keras: keras' median latency / this row's. speedup_vs_keras_paired: the median
    over rounds of keras' round median / this row's round median, rounds being the turns of
    `measure_interleaved`, a second or so apart: a slowdown of the machine that outlasts a round
    and hits both alike cancels out of each round's ratio (one that hits one runtime harder
    does not). NaN when the two were not measured in the same rounds (another bench run, or
    other settings).
    """
    rounds = df.pop("round_medians_ms") if "round_medians_ms" in df else None
    sessions = df.pop("session").tolist() if "session" in df else [None] * len(df)
    if "latency_ms_median" not in df or "threads" not in df:
        return df
    is_keras = ((df["variant"] == "keras") & (df["runtime"] == "keras")).to_numpy()
    keys = list(zip(df["model_id"], df["threads"], strict=True))
    ref = {k: i for i, k in reversed(list(enumerate(keys))) if is_keras[i]}
    median = df["latency_ms_median"].to_numpy(np.float64)
    keras_ms = np.array([median[ref[k]] if k in ref else np.nan for k in keys])
    df["speedup_vs_keras"] = keras_ms / median
    if rounds is not None:
        rounds = rounds.tolist()
        df["speedup_vs_keras_paired"] = [
            paired_ratio(rounds[ref[k]], rounds[i])
            if k in ref and isinstance(sessions[i], str) and sessions[ref[k]] == sessions[i]
            else np.nan
            for i, k in enumerate(keys)
        ]
    return df


def paired_ratio(reference: list | None, other: list | None) -> float:
    """Median over rounds of reference / other (one median per round, None for a round without
    a block); NaN when the two lists are not of the same rounds or share no round."""
    if not isinstance(reference, list) or not isinstance(other, list):
        return float("nan")
    if len(reference) != len(other):
        return float("nan")
    ratios = [a / b for a, b in zip(reference, other, strict=True) if a and b]
    return float(np.median(ratios)) if ratios else float("nan")


def _sort(df):
    try:
        order = list(importlib.import_module("unetq.compress").VARIANTS)
    except Exception:  # labels only
        order = []
    rank = {v: i for i, v in enumerate(order)}
    df = df.assign(_rank=[rank.get(v, len(rank)) for v in df["variant"]])
    by = ["model_id", "_rank", "runtime"] + (["threads"] if "threads" in df else [])
    return df.sort_values(by, kind="stable").drop(columns="_rank")


# --- the machine -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU model, cores, ISA flags relevant to int8/fp16/bf16, OS, Python and library versions."""
    from importlib import metadata

    cpuinfo = _read_text("/proc/cpuinfo")
    model = _first_field(cpuinfo, "model name") or platform.processor() or platform.machine()
    flags = set((_first_field(cpuinfo, "flags") or "").split())
    cores = set()
    for block in cpuinfo.split("\n\n"):
        package, core = _first_field(block, "physical id"), _first_field(block, "core id")
        if package is not None and core is not None:
            cores.add((package, core))
    physical = len(cores) or None
    if physical is None:
        try:
            import psutil

            physical = psutil.cpu_count(logical=False)
        except Exception:  # psutil is optional here
            physical = None
    usable = usable_cores()
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    isa = {flag: flag in flags for flag in ISA_FLAGS}
    isa["amx"] = any(f.startswith("amx") for f in flags)
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable,
        "isa": isa,
        "memory_total_mb": _mem_total_mb(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average": _load_average(),  # other work on the machine skews timings
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _first_field(cpuinfo: str, key: str) -> str | None:
    m = re.search(rf"^{re.escape(key)}\s*:\s*(.*)$", cpuinfo, re.M)
    return m.group(1).strip() if m else None


def _mem_total_mb() -> float | None:
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read_text("/proc/meminfo"), re.M)
    return round(int(m.group(1)) / 1024.0, 1) if m else None


if __name__ == "__main__":
    sys.exit(probe_main())
