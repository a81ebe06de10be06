"""`unetq benchmark --model FILE`: a user's own trained model through every variant, no training.

The run folder is the study's with one model: models/<model_id>/model.keras (the model as unetq
runs it, see unetq.usermodel; model.onnx or model.tflite for those formats) and model.json
(where it came from, its size, its pixels, its head), then compress -> evaluate -> bench ->
robustness (if asked) -> report, with the same CSVs, resumable like a study. Without a dataset
it still measures speed, size and memory; accuracy and the guarded variants need labelled
images, and the run says so.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from unetq.compress import random_images
from unetq.config import StudyConfig
from unetq.conventions import Conventions
from unetq.data import detect_format, open_dataset
from unetq.errors import ConfigError, DataError, UnetqError
from unetq.records import ModelInfo
from unetq.runfolder import RunFolder
from unetq.study import (
    StudyContext,
    compress_run_models,
    run_steps,
    step_bench,
    step_compress,
    step_data,
    step_evaluate,
    step_inspect,
    step_report,
    step_robustness,
)
from unetq.usermodel import adopt, adopted_info, inspect_model, model_id_for
from unetq.variants import VARIANTS, for_origin, original_of, validate_variants

FORMATS = {"keras": "a Keras model", "onnx": "an ONNX model", "tflite": "a .tflite file"}
NO_DATA = "no dataset given (--data-dir): accuracy needs labelled images; measuring speed only"


def run_benchmark(
    model_path: Path,
    cfg: StudyConfig,
    run_dir: Path,
    data_dir: Path | None = None,
    data_format: str | None = None,
    said: Conventions | None = None,
    size: int | None = None,
    console: Console | None = None,
) -> Path:
    """Check the model and the data against each other before anything is written, then bring
    the model in and run the steps. `data_format` None: detected from the folder."""
    console = console or Console()
    asked = validate_variants(cfg.compress.variants)
    model, info = inspect_model(model_path, said, size or cfg.data.image_size)
    variants, dropped = for_origin(asked, info.format)
    variants = variants or [original_of(info.format)]  # nothing else it can become: itself
    if dropped:
        console.print(
            f"[yellow]not made from {FORMATS[info.format]}:[/] {', '.join(dropped)} "
            "(the TFLite converter starts from a TensorFlow model)",
            highlight=False,
        )
    data = {"image_size": info.input_hw[0]}
    if data_dir is not None:
        data.update(data_dir=Path(data_dir), source="auto")
        data["format"] = data_format or detect_format(Path(data_dir))
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update=data),
            "compress": cfg.compress.model_copy(update={"variants": variants}),
        }
    )
    if info.format != "keras":  # the default list names Keras' variants: take every one made
        robust = [v for v in variants if not VARIANTS[v].slow]
        cfg.robustness = cfg.robustness.model_copy(update={"variants": robust})
    if cfg.data.mode == "tile" and cfg.data.tile_overlap >= info.input_hw[0]:
        raise ConfigError(
            f"--tile-overlap {cfg.data.tile_overlap} must be smaller than the model's "
            f"{info.input_hw[0]} px tiles"
        )
    has_data = data_dir is not None
    index = open_dataset(cfg.data) if has_data else None
    if index is not None:
        check_classes(index, info)
    model_id = model_id_for(model_path)
    run = RunFolder(run_dir)
    known = adopted_info(run.model_info(model_id))
    if known is not None and known.source_sha256 != info.source_sha256:
        raise UnetqError(
            f"{run.root} holds another model named {model_id} (from {known.source}); "
            "use another --out"
        )
    others = [m for m in run.model_ids() if m != model_id]
    if others:
        raise UnetqError(f"{run.root} holds other models ({', '.join(others)}); use another --out")

    def step_model(ctx: StudyContext) -> None:
        original = run.artifact(model_id, original_of(info.format))
        if known is None or not original.exists():
            adopt(model, info, original, run.model_info(model_id))
        ctx.console.print(_model_line(model_id, info), highlight=False, soft_wrap=True)

    steps = [("model", step_model)]
    if has_data:
        steps += [("data", step_data), ("compress", step_compress), ("evaluate", step_evaluate)]
    else:
        console.print(f"[yellow]{NO_DATA}[/]", highlight=False)
        steps += [("compress", step_compress_without_data)]
    steps += [("bench", step_bench), ("inspect", step_inspect)]
    if has_data:
        steps += [("robustness", step_robustness)]
    steps += [("report", step_report)]
    return run_steps(cfg, run_dir, steps, "benchmark", console, {"index": index})


def check_classes(index, info: ModelInfo) -> None:
    """The dataset's classes must be the model's."""
    if index.num_classes != info.num_classes:
        raise DataError(
            f"{index.root} has {index.num_classes} classes ({', '.join(index.class_names)}) but "
            f"the model predicts {info.num_classes}: give a dataset with the model's classes"
        )


def step_compress_without_data(ctx: StudyContext) -> None:
    """Every variant that needs no labelled images, calibrated on seeded noise (flagged)."""
    cfg = ctx.cfg.compress
    variants = [v for v in cfg.variants if not VARIANTS[v].guarded]
    skipped = [v for v in cfg.variants if VARIANTS[v].guarded]
    if skipped:
        ctx.console.print(
            f"[yellow]not made without a dataset:[/] {', '.join(skipped)} (they keep the "
            "accuracy of validation images)",
            highlight=False,
        )
    ctx.console.print(
        "[yellow]int8 calibrated on random images:[/] not representative; pass --data-dir",
        highlight=False,
    )
    size = ctx.cfg.data.image_size
    calibration, verify = random_images((size, size), cfg)
    compress_run_models(ctx, variants, calibration, verify)


def _model_line(model_id: str, info: ModelInfo) -> str:
    h, w = info.input_hw
    size = f"{h}x{w}" + (
        " (fixed by unetq: the model's was not)" if info.size_fixed_by_unetq else ""
    )
    return (
        f"model {model_id}: {info.describe_head()}, input {size}, "
        f"{info.input_norm.describe()} from {info.norm_from}"
    )
