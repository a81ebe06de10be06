"""How steady is this machine? Times a fixed single-thread loop for a while and prints the
median of each stretch, so benchmark differences can be told from the machine's own drift.

    python benchmarks/machine_drift.py [--seconds 90] [--stretches 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def unit() -> float:
    total = 0.0
    for i in range(200_000):
        total += i * 0.5
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--stretches", type=int, default=15)
    args = p.parse_args()
    samples = []
    end = time.time() + args.seconds
    while time.time() < end:
        start = time.perf_counter()
        unit()
        samples.append((time.perf_counter() - start) * 1000)
    parts = np.array_split(np.array(samples), args.stretches)
    medians = [float(np.median(part)) for part in parts]
    print(f"median ms of a fixed loop, {args.stretches} stretches over {args.seconds:.0f} s:")
    print(" ".join(f"{m:.1f}" for m in medians))
    print(f"slowest / fastest - 1 = {max(medians) / min(medians) - 1:.1%}")


if __name__ == "__main__":
    main()
