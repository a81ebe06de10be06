"""The parent side of a measurement: start probe processes, time them in turns, read results.

`run_probe` measures once in a fresh child; `measure_interleaved` keeps one child per job alive
and gives each a block of timed calls in turn, round after round (see its docstring).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetq.bench.probe import (
    DEFAULT_LOADER,
    PROBE_MARK,
    READY_MARK,
    SAMPLES_MARK,
    LatencyStats,
    MemoryStats,
    ProbeResult,
)
from unetq.errors import UnetqError
from unetq.models import to_input
from unetq.runtimes import Setting


def _probe_command(runtime: str, artifact: Path | str | None, threads: int, **options) -> list[str]:
    """The probe's command line; each option (None: left out) becomes `--name value`."""
    cmd = [sys.executable, "-m", "unetq.bench.probe", "--runtime", runtime]
    cmd += ["--artifact", str(artifact or ""), "--threads", str(int(threads))]
    for name, value in options.items():
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
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
        batch=int(data.get("batch", 1)),
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
            images=images_path,
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
    """One latency measurement: `repeats` timed calls after `warmup` untimed ones. A
    throughput measurement (`stream` > 0): a stream of `stream` images per round, in calls of
    `setting`'s batch, its ms per image one sample per round."""

    runtime: str
    artifact: Path
    threads: int
    repeats: int
    warmup: int
    precision: str | None = None
    rewarm: bool = True  # one untimed call before each later block (not worth it for slow ones)
    whole: bool = True  # also time whole images end to end where they are given (tile mode)
    stream: int = 0  # images per round of a throughput measurement (0: a latency one)
    setting: Setting = field(default_factory=Setting)


@dataclass(frozen=True)
class WholeImages:
    """Tile mode: whole images (uint8 [H, W, 3], sizes of the evaluated split's) that a probe
    cuts into tiles, segments and stitches, `per_round` of them in each round."""

    images: list[np.ndarray]
    tile: int
    overlap: int
    per_round: int = 1

    def tiles(self, index: int) -> int:
        from unetq.data.tiles import tiles_per_image

        height, width = self.images[index % len(self.images)].shape[:2]
        return tiles_per_image(height, width, self.tile, self.overlap)

    def save(self, path: Path) -> Path:
        arrays = {f"image{i}": image for i, image in enumerate(self.images)}
        np.savez(path, overlap=self.overlap, **arrays)
        return path


class _ServedProbe:
    """A probe child that stays alive between timing blocks (see `_serve`)."""

    def __init__(self, job: ProbeJob, images_path: Path, loader: str, whole: Path | None = None):
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
            images=images_path,
            whole=whole,
            batch=job.setting.batch if job.stream and not job.setting.asynchronous else None,
        )
        if job.setting.asynchronous:
            cmd.append("--asynchronous")
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

    def stream(self, count: int, warmup: int) -> list[float]:
        self._send(f"stream {count} {warmup}")
        return json.loads(self._read(SAMPLES_MARK))

    def whole(self, count: int) -> list[float]:
        self._send(f"whole {count}")
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
    whole: WholeImages | None = None,
) -> list[ProbeResult | UnetqError]:
    """Time several jobs in rounds, each job in its own fresh process, one process at a time.

    Every process loads its model first (at once, untimed); then each round gives every job a
    block of its timed calls in turn (the first block after the job's warm-up, later blocks
    after one untimed call, since other processes have run in between). A slow spell of the
    machine thus hits every job a little instead of one job entirely, which is what makes two
    runs agree. Memory readings stay per process. Results are in job order; a job that fails
    gives its UnetqError in place of a result. With `whole` (tile mode), each job's block in a
    round is followed by `whole.per_round` whole images timed end to end (jobs with
    `whole=False` skip them).
    """
    results: dict[int, ProbeResult | UnetqError] = {}
    probes: dict[int, _ServedProbe] = {}
    round_samples: dict[int, list[list[float]]] = {i: [] for i in range(len(jobs))}
    whole_ms: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
    with tempfile.TemporaryDirectory(prefix="unetq-probe-") as tmp:
        images_path = Path(tmp) / "images.npy"
        np.save(images_path, as_model_input(images))
        whole_path = whole.save(Path(tmp) / "whole.npz") if whole is not None else None
        try:
            for i, job in enumerate(jobs):
                probes[i] = _ServedProbe(
                    job, images_path, loader, whole_path if job.whole else None
                )

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
                        round_samples[i].append([])
                        continue
                    warmup = job.warmup if r == 0 else min(job.warmup, int(job.rewarm))
                    if job.stream:
                        block = attempt(i, lambda p, n=job.stream, w=warmup: p.stream(n, w))
                    else:
                        block = attempt(i, lambda p, n=calls, w=warmup: p.time(n, w))
                    round_samples[i].append(list(block or []))
                    if whole is not None and job.whole and i in probes:
                        count = whole.per_round
                        whole_ms[i] += attempt(i, lambda p, n=count: p.whole(n)) or []
                    if on_block is not None:
                        on_block(job, r)
            for i in list(probes):
                result = attempt(i, _ServedProbe.finish)
                if result is not None:
                    result.round_samples_ms = round_samples[i]
                    result.round_medians_ms = [
                        float(np.median(b)) if b else None for b in round_samples[i]
                    ]
                    result.whole_image_ms = whole_ms[i]
                    result.whole_image_tiles = [whole.tiles(k) for k in range(len(whole_ms[i]))]
                    results[i] = result
        finally:
            for probe in probes.values():
                probe.close()
    return [results[i] for i in range(len(jobs))]


def measure_rounds(
    title: str,
    jobs: list[ProbeJob],
    images: np.ndarray,
    rounds: int,
    progress: Any = None,
    detail: Callable[[ProbeJob], str] = lambda job: job.runtime,
    **options: Any,
) -> tuple[list[ProbeResult | UnetqError], str]:
    """`measure_interleaved` under a progress bar ("<title> round r/R (<detail of the job>)"),
    and the session id the results share (their rounds pair with each other's)."""
    task = progress.add_task(title, total=rounds) if progress else None

    def on_block(job: ProbeJob, r: int) -> None:
        if task is not None:
            description = f"{title} round {r + 1}/{rounds} ({detail(job)})"
            progress.update(task, description=description)

    try:
        results = measure_interleaved(jobs, images, rounds, on_block=on_block, **options)
    finally:
        if task is not None:
            progress.remove_task(task)
    return results, uuid.uuid4().hex[:12]


def as_model_input(images: np.ndarray) -> np.ndarray:
    """float32 [N, 1, H, W, 3] in [0, 1] from uint8 or float images [N, H, W, 3] / [N,1,H,W,3]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = to_input(images)
    images = images.astype(np.float32, copy=False)
    if images.ndim == 4:
        images = images[:, None]
    if images.ndim != 5 or images.shape[1] != 1 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] or [N, 1, H, W, 3], got {images.shape}")
    return np.ascontiguousarray(images)


def bench_images(
    image_hw: tuple[int, int], n: int = 8, source: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """The timed inputs, float32 [n, 1, H, W, 3]: the first n of `source`, else seeded uniform."""
    if source is not None and len(source):
        return as_model_input(np.asarray(source)[:n])
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, *image_hw, 3), dtype=np.float32)
