"""openvino-int8 with each of NNCF's activation ranges, on every model of a run folder.

    python benchmarks/int8_ranges.py runs/quick
    python benchmarks/int8_ranges.py runs/membrane --models xception-f16-bn-e30 --json out.json

For each model: openvino-int8 converted twice from the same calibration images, once with
`compress.openvino_ranges = "minmax"` (unetq's default) and once with "mean-minmax" (NNCF's);
each one's fg IoU drop (points, mean over images) against the float IR on the guard's
validation images and on the test images, scored as the study scores them (whole stitched
images in tile mode). Nothing is written into the run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from unetq.compress import _Job, _load_model, dataset_images, model_input_hw
from unetq.convert import ConvertInputs, Validation
from unetq.convert.openvino import _compiled_f32, _from_export, _predict, openvino_int8
from unetq.data import load_inputs, open_dataset
from unetq.data.cache import load_whole
from unetq.models import to_input
from unetq.runfolder import RunFolder

RANGES = ("minmax", "mean-minmax")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder with trained models")
    p.add_argument("--models", default=None, help="comma list of model ids (default: all)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def test_images(data, hw, validation: Validation) -> Validation:
    """The test split as the study scores it (the validation's tiles in tile mode)."""
    data = data.model_copy(update={"image_size": hw[0]})
    index = open_dataset(data)
    if validation.tile is not None:
        test = load_whole(index, "test", data)
        images = [to_input(image) for image in test.images]
        masks = list(test.masks)
        tiles = (validation.tile, validation.overlap)
    else:
        test = load_inputs(index, "test", data)
        images, masks, tiles = to_input(test.images), test.masks, (None, 0)
    return Validation(images, masks, index.num_classes, index.background_class, *tiles)


def compiled(files: dict[str, bytes]):
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        for suffix, content in files.items():
            (Path(tmp) / f"model{suffix}").write_bytes(content)
        return _compiled_f32(ov.Core().read_model(str(Path(tmp) / "model.xml")))


def model_drops(run: RunFolder, model_id: str) -> dict[str, dict[str, float]]:
    """{ranges: {"validation": drop, "test": drop}} in points."""
    config = run.load_config()
    model_path = run.model_dir(model_id) / "model.keras"
    hw = model_input_hw(model_path)
    calibration, verify, validation, _ = dataset_images(hw, config.compress, config.data)
    if validation is None:
        raise SystemExit(f"{run.root}'s dataset has no validation images to score on")
    test = test_images(config.data, hw, validation)
    job = _Job(_load_model(model_path), model_path, hw, calibration, verify, config.compress)
    try:
        inputs = ConvertInputs(job.saved_model(), to_input(calibration))
        float_ir = _predict(_compiled_f32(_from_export(inputs)))
        reference = {"validation": validation.scores(float_ir), "test": test.scores(float_ir)}
        out = {}
        for ranges in RANGES:
            int8 = openvino_int8(
                ConvertInputs(inputs.source, inputs.calibration, openvino_ranges=ranges)
            )
            predict = _predict(compiled(int8.files))
            out[ranges] = {
                split: 100 * float(np.nanmean(reference[split] - images.scores(predict)))
                for split, images in (("validation", validation), ("test", test))
            }
        return out
    finally:
        job.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = RunFolder(args.run)
    models = args.models.split(",") if args.models else run.model_ids()
    table = Table(title="openvino-int8 fg IoU drop against the float IR (points)")
    table.add_column("model")
    for ranges in RANGES:
        table.add_column(f"{ranges} validation", justify="right")
        table.add_column(f"{ranges} test", justify="right")
    figures = {}
    for model_id in models:
        drops = figures[model_id] = model_drops(run, model_id)
        cells = [f"{drops[r][split]:+.2f}" for r in RANGES for split in ("validation", "test")]
        table.add_row(model_id, *cells)
    Console(width=150).print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
