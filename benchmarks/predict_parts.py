"""Where `unetq predict`'s time goes: each part of its work timed alone, on every usable core.

    python benchmarks/predict_parts.py MODEL IMAGES [--tile-overlap 32] [--batch 1,8,async]

Decodes every image of IMAGES (a folder), then segments all of them with MODEL once per
setting (`--batch`: images per model call, tile mode: tiles, or 'async' for OpenVINO's
asynchronous requests) with nothing else running, then writes every mask and overlay PNG into a
temporary folder, one after the other. Each part's seconds and images per second, and the sum,
to set beside `unetq predict`'s own wall time (where these parts overlap on the same cores).
Every setting is checked to give the masks of the first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help=".tflite, OpenVINO .xml or .keras")
    p.add_argument("images", type=Path, help="a folder of images")
    p.add_argument("--tile-overlap", type=int, default=None, help="tile mode (pixels)")
    p.add_argument("--batch", default="1,8,async", help="comma list of settings")
    return p.parse_args(argv)


def timed(what: str, count: int, work):
    start = time.perf_counter()
    out = work()
    seconds = time.perf_counter() - start
    print(f"{what:40s} {seconds:7.1f} s  {count / seconds:7.1f} images/s")
    return out, seconds


def main(argv: list[str] | None = None) -> int:
    from unetq.data import read_image
    from unetq.predict import _resized_predictions, _write, default_runtime, list_images
    from unetq.runtimes import Setting, import_tensorflow, load_segmenter, usable_cores

    args = parse_args(argv)
    runtime = default_runtime(args.model)
    if runtime == "keras":
        import_tensorflow()
    files = list_images(args.images)
    images, _ = timed("decode", len(files), lambda: [read_image(f) for f in files])
    first = None
    for text in args.batch.split(","):
        setting = Setting.parse(text)
        if setting.asynchronous and runtime != "openvino":
            continue
        segmenter = load_segmenter(runtime, args.model, usable_cores(), args.tile_overlap, setting)
        together = segmenter.batch

        def segment(segmenter=segmenter, together=together):
            masks = []
            for i in range(0, len(images), together):
                chunk = images[i : i + together]
                if args.tile_overlap is None:
                    masks += _resized_predictions(segmenter, chunk)
                else:
                    masks += segmenter.predict(chunk)
            return masks

        masks, _ = timed(f"segment ({setting.name}, {together} per call)", len(images), segment)
        if first is None:
            first = masks
        same = all(np.array_equal(a, b) for a, b in zip(first, masks, strict=True))
        print(f"{'':40s} masks equal to the first setting's: {same}")
    with tempfile.TemporaryDirectory() as out:

        def write():
            for path, image, mask in zip(files, images, first, strict=True):
                _write(Path(out), path, image, mask, 0)

        timed("write mask + overlay PNGs", len(files), write)

        def masks_only():
            for path, image, mask in zip(files, images, first, strict=True):
                _write(Path(out), path, image, mask, None)

        timed("write mask PNGs only", len(files), masks_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
