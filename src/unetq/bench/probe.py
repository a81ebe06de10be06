"""The measurement probe: the child process that loads one artifact and times its calls.

`python -m unetq.bench.probe --runtime R --artifact FILE ...` imports only what its runtime
needs, loads the model with a given thread count, warms up, times only `predictor.run` with
`time.perf_counter_ns`, and reads the peak resident set (VmHWM) after imports, after loading and
after inference. One process per measurement isolates runtimes from each other and lets
TensorFlow take a new thread setting each time (it accepts one per process).

This file's top level imports numpy, the standard library and unetq's numpy-free helpers only:
the probe must not pay for TensorFlow or pandas when it measures LiteRT.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetq.errors import UnetqError, first_line
from unetq.memory import MB, peak_rss_mb, reset_peak_rss

PROBE_MARK = "UNETQ_PROBE_JSON "
READY_MARK = "UNETQ_PROBE_READY "
SAMPLES_MARK = "UNETQ_PROBE_SAMPLES "
DEFAULT_LOADER = "unetq.runtimes:load_predictor"
# Imported before the "after imports" reading, so the model's cost excludes the libraries.
RUNTIME_IMPORTS = {
    "keras": ("tensorflow", "keras"),
    "litert": ("ai_edge_litert.interpreter",),
    "openvino": ("openvino",),
    "onnxruntime": ("onnxruntime",),
}


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
    # per round: the timed samples of this job's block (empty: no block in that round)
    round_samples_ms: list[list[float]] = field(default_factory=list)
    # tile mode: ms per whole image, end to end (cut, model calls, stitch), with the tile count
    # of each timed image
    whole_image_ms: list[float] = field(default_factory=list)
    whole_image_tiles: list[int] = field(default_factory=list)
    batch: int = 1  # images per call (asynchronous requests in flight) of a throughput setting


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


def time_stream(predictor: Any, images: np.ndarray, count: int, warmup: int, start: int = 0):
    """ms per image over a stream of `count` images (cycling through float32 `images`
    [N, 1, H, W, 3] from `start`) in calls of the predictor's batch (`run_batch`; `run` for one
    image at a time), after `warmup` untimed calls."""
    batch = int(getattr(predictor, "batch", 1))
    cycle = images[:, 0]
    index = (start + np.arange(max(count, batch * warmup))) % len(cycle)
    call = predictor.run if batch == 1 else predictor.run_batch
    for i in range(warmup):
        call(cycle[index[i * batch : (i + 1) * batch]])
    # each call's batch is gathered as it comes (as a caller's would be): the memory reading
    # holds no copy of the whole stream
    clock = time.perf_counter_ns
    t0 = clock()
    for i in range(0, count, batch):
        call(cycle[index[i : min(i + batch, count)]])
    return (clock() - t0) / 1e6 / count


def time_whole_images(
    predictor: Any, images: list[np.ndarray], overlap: int, count: int, start: int = 0
) -> list[float]:
    """Tile mode, end to end: `count` whole uint8 images (cycling through `images` from
    `start`), each segmented by `unetq predict`'s TiledPredictor (cut into tiles, a model call
    per tile, stitched back); ms each."""
    from unetq.runtimes import TiledPredictor

    tiled = TiledPredictor(predictor, overlap)
    samples = []
    clock = time.perf_counter_ns
    for i in range(count):
        image = images[(start + i) % len(images)]
        t0 = clock()
        tiled.predict([image])
        samples.append((clock() - t0) / 1e6)
    return samples


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (others' work skews timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _load_callable(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "load_predictor")


def _whole(path: str | None) -> tuple[list[np.ndarray], int]:
    """(whole images, tile overlap) from the parent's .npz (`image0`, `image1`, ..., `overlap`)."""
    if not path:
        return [], 0
    with np.load(path) as data:
        count = len([k for k in data.files if k.startswith("image")])
        return [data[f"image{i}"] for i in range(count)], int(data["overlap"])


def _probe(args: argparse.Namespace) -> dict[str, Any]:
    images = np.load(args.images) if args.images else None
    whole, overlap = _whole(args.whole)
    if args.loader == DEFAULT_LOADER:  # another loader imports what it needs itself
        for module in RUNTIME_IMPORTS.get(args.runtime, ()):
            importlib.import_module(module)
    if whole:  # with the libraries, not the model
        for module in ("unetq.runtimes", "unetq.data.tiles"):
            importlib.import_module(module)
    loader = None if args.runtime == "none" else _load_callable(args.loader)
    # The baseline: after imports, with the high-water mark reset where the kernel allows it,
    # so a transient peak while importing does not hide the model's cost.
    reset_peak_rss()
    after_imports = peak_rss_mb()
    keep: list[Any] = []
    precision, input_hw, batch = "none", None, 1
    if args.allocate_mb:
        block = np.ones(int(args.allocate_mb * MB) // 8)  # written, so every page is resident
        keep.append(block)
    if loader is not None:
        options = {"batch": args.batch} if args.batch is not None else {}
        if args.asynchronous:
            options["asynchronous"] = True
        predictor = loader(
            args.runtime,
            Path(args.artifact),
            threads=args.threads,
            precision=args.precision,
            **options,
        )
        keep.append(predictor)
        precision = str(getattr(predictor, "precision", None) or "unknown")
        input_hw = list(getattr(predictor, "input_hw", None) or []) or None
        batch = int(getattr(predictor, "batch", 1))
    after_load = peak_rss_mb()
    latency, load, peak_before_whole = None, None, None
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
        load = load_average()
        if args.serve:
            latency, load, peak_before_whole = _serve(predictor, images, after_load, whole, overlap)
        elif args.repeats > 0:
            latency = time_predictor(predictor, images, args.repeats, args.warmup)
        else:
            for i in range(args.infer):
                predictor.run(images[i % len(images)])
    # the model's peak, not that of cutting and stitching whole images (only some jobs do it)
    peak = peak_before_whole if peak_before_whole is not None else peak_rss_mb()
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
        "batch": batch,
    }


def _serve(
    predictor: Any,
    images: np.ndarray,
    after_load: float,
    whole: list[np.ndarray] | None = None,
    overlap: int = 0,
):
    """Time blocks of calls on the parent's command, so it can interleave several probes.

    Protocol (one line each): the child says `READY`; the parent sends `time N W` (W warm-up
    calls, then N timed ones; the child answers `SAMPLES [ms, ...]`), `stream N W` (N images in
    calls of the predictor's batch, `time_stream`; answered `SAMPLES [ms per image]`) or, given
    whole images, `whole N` (N whole images end to end, `time_whole_images`; answered like
    `time`) any number of times, then `done`. Each block continues its image cycle where the
    last one stopped; the warm-up calls use the block's first images.
    """
    print(f"{READY_MARK}{json.dumps({'rss_after_load_mb': after_load})}", flush=True)
    samples: list[float] = []
    load = peak_before_whole = None
    start = whole_start = 0
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "done":
            break
        if command[0] == "whole" and len(command) == 2 and whole:
            if peak_before_whole is None:
                peak_before_whole = peak_rss_mb()
            block = time_whole_images(predictor, whole, overlap, int(command[1]), whole_start)
            whole_start = (whole_start + int(command[1])) % len(whole)
            print(f"{SAMPLES_MARK}{json.dumps(block)}", flush=True)
            continue
        if command[0] not in ("time", "stream") or len(command) != 3:
            raise UnetqError(f"unknown probe command: {line.strip()}")
        repeats, warmup = int(command[1]), int(command[2])
        load = load or load_average()
        if command[0] == "stream":
            block = [time_stream(predictor, images, repeats, warmup, start)]
        else:
            cycled = np.roll(images, -start, axis=0)
            block = time_predictor(predictor, cycled, repeats, warmup).samples_ms
        start = (start + repeats) % len(images)
        samples += block
        print(f"{SAMPLES_MARK}{json.dumps(block)}", flush=True)
    if not samples:
        raise UnetqError("the parent asked for no timed calls")
    return LatencyStats.from_samples(samples), load, peak_before_whole


def _probe_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unetq.bench.probe", description=__doc__)
    p.add_argument("--runtime", required=True, help="keras, litert, openvino, onnxruntime, or none")
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
    p.add_argument("--whole", default=None, help=".npz of uint8 whole images for `whole N`")
    p.add_argument("--batch", type=int, default=None, help="images per call (`stream N W`)")
    p.add_argument("--asynchronous", action="store_true", help="openvino: async requests")
    return p


def probe_main(argv: list[str] | None = None) -> int:
    # Ctrl-C reaches the whole process group: the parent stops its probes itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = _probe_parser().parse_args(argv)
    try:
        result = _probe(args)
    except Exception as exc:  # the parent shows this last stderr line
        message = first_line(exc)
        if not isinstance(exc, UnetqError):  # a user-facing error already says what and where
            message = f"{type(exc).__name__}: {message}"
        print(f"probe error: {message}", file=sys.stderr, flush=True)
        return 1
    sys.stdout.write(PROBE_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(probe_main())
