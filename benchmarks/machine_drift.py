"""How steady is this machine? Times a fixed single-thread workload for a while and prints the
median of each stretch, so benchmark differences can be told from the machine's own drift.

    python benchmarks/machine_drift.py [--seconds 90] [--stretches 15]
    python benchmarks/machine_drift.py --tflite runs/quick/models/<id>/tflite-int8.tflite --cpu 0

The workload is a pure-Python loop, or one-thread LiteRT calls of a .tflite file (`--tflite`).
Each call is also timed in CPU time of the calling thread: if CPU time grows with wall time, the
thread was running, only slower (a busy sibling hyperthread, a lower clock, a shared cache),
which no benchmark protocol can take out; if not, it was waiting for a CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np


def python_loop() -> float:
    total = 0.0
    for i in range(200_000):
        total += i * 0.5
    return total


def litert_call(path: str) -> Callable[[], object]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.random.default_rng(0).random(inp["shape"], dtype=np.float32).astype(inp["dtype"])

    def call():
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--stretches", type=int, default=15)
    p.add_argument("--tflite", default=None, help="time one-thread LiteRT calls of this file")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    work = litert_call(args.tflite) if args.tflite else python_loop
    for _ in range(5):
        work()
    wall, cpu = [], []
    end = time.time() + args.seconds
    while time.time() < end:
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        work()
        wall.append((time.perf_counter_ns() - w0) / 1e6)
        cpu.append((time.thread_time_ns() - c0) / 1e6)
    medians = [float(np.median(part)) for part in np.array_split(np.array(wall), args.stretches)]
    what = args.tflite or "a fixed Python loop"
    print(f"median ms of {what}, {args.stretches} stretches over {args.seconds:.0f} s:")
    print(" ".join(f"{m:.1f}" for m in medians))
    print(f"slowest / fastest - 1 = {max(medians) / min(medians) - 1:.1%}")
    print(f"CPU time / wall time of the calls = {sum(cpu) / sum(wall):.3f}")


if __name__ == "__main__":
    main()
