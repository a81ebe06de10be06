"""LiteRT speed of one model exported with Keras' UpSampling2D as is (RESHAPE + TILE) and with
unetq's delegable upsampling (concatenation + reshape), fp32 and int8, at one thread.

    python benchmarks/upsampling_export.py runs/quick/models/xception-f24-bn-e16 [--calls 400]

All four files are loaded in this one process and called in turn, one call each, so a slow
spell of the machine hits them alike; the ratio is the median over turns of (delegable / TILE).
int8 is calibrated on 16 seeded uniform images: this measures speed, not accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from unetq import compress
from unetq.runtimes import (
    LiteRTPredictor,
    load_keras_model,
    native_stderr_quiet,
    segmentation_shape,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="models/<model_id>/ of a run")
    p.add_argument("--calls", type=int, default=400, help="timed calls of each file")
    args = p.parse_args()
    path = args.model_dir / "model.keras"
    model = load_keras_model(path)
    h, w, _ = segmentation_shape(model, path)
    rng = np.random.default_rng(0)
    calibration = rng.random((16, h, w, 3), dtype=np.float32)
    x = rng.random((1, h, w, 3), dtype=np.float32)
    predictors = {}
    with tempfile.TemporaryDirectory(prefix="unetq-up-") as tmp:
        for lowered in (False, True):
            saved = compress.export_saved_model(model, (h, w), Path(tmp) / f"sm{lowered}", lowered)
            for name in ("fp32", "int8"):
                convert = compress.VARIANTS[f"tflite-{name}"].convert
                file = Path(tmp) / f"{name}-{lowered}.tflite"
                with native_stderr_quiet():
                    file.write_bytes(convert(compress.ConvertInputs(saved, calibration)))
                predictors[(name, lowered)] = LiteRTPredictor(file, threads=1)
        for predictor in predictors.values():
            for _ in range(5):
                predictor.run(x)
        times = {key: [] for key in predictors}
        for _ in range(args.calls):
            for key, predictor in predictors.items():
                start = time.perf_counter_ns()
                predictor.run(x)
                times[key].append((time.perf_counter_ns() - start) / 1e6)
    print(f"{args.model_dir.name}, {h}x{w}, 1 thread, {args.calls} alternating calls each:")
    for name in ("fp32", "int8"):
        tile, delegable = np.array(times[(name, False)]), np.array(times[(name, True)])
        print(
            f"  {name}: TILE export {np.median(tile):.2f} ms, delegable {np.median(delegable):.2f}"
            f" ms, ratio {np.median(delegable / tile):.3f}"
        )


if __name__ == "__main__":
    main()
