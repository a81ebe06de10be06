"""`unetq inspect` and the study's inspect step: `layers.csv` for every model and variant.

Per model: the Keras model's layers (`layers.model_layers`; the exported graph's for every
variant but keras, so the export's rewrites count), each OpenVINO variant profiled at every
thread count (`openvino.profile`), each quantized variant's per-layer error against its runtime's
float variant on validation images (`error`), and every layer's bound from this machine's peaks
(`table`). One unit of work per model (unetq.work); its record names the artifacts' content, the
images, the peaks and the settings, so a rerun recomputes only what changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetq.errors import UnetqError
from unetq.fileio import write_csv, write_json
from unetq.inside.table import COLUMNS, variant_rows
from unetq.runfolder import (
    MODEL_FILE,
    RunFolder,
    array_digest,
    artifact_digest,
    read_json,
    sidecar_path,
    variant_runs,
)
from unetq.work import Stage, Unit, run_stage, write_record

# A variant's float reference for the per-layer error: the float variant of its runtime.
FLOAT_OF = {"litert": "tflite-fp32", "openvino": "openvino-fp32"}
FLOAT_VARIANTS = ("keras", "tflite-fp32", "openvino-fp32")
VERSION = 2  # of the table's computation: a new one redoes every table


def model_tables(
    model_dir: Path,
    model_id: str,
    threads: list[int],
    peaks: dict[str, Any],
    images: np.ndarray | None,
    calls: int = 30,
    variants: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The rows of layers.csv for one model: every variant present (or `variants`), every
    thread count. `images`: float32 [N, H, W, 3] for the per-layer error (None: no error)."""
    from unetq.export import lower_for_export
    from unetq.inside.error import litert_errors, openvino_errors
    from unetq.inside.layers import model_layers
    from unetq.inside.openvino import profile
    from unetq.runtimes import load_keras_model

    model = load_keras_model(Path(model_dir) / MODEL_FILE)
    original = model_layers(model)
    exported = model_layers(lower_for_export(model))
    runs = [r for r in variant_runs(model_dir) if variants is None or r.variant in variants]
    artifacts = {r.variant: r.artifact for r in variant_runs(model_dir)}
    rows = []
    for run in runs:
        layers = original if run.variant == "keras" else exported
        errors = None
        reference = FLOAT_OF.get(run.runtime)
        if images is not None and run.variant not in FLOAT_VARIANTS and reference in artifacts:
            measure = openvino_errors if run.runtime == "openvino" else litert_errors
            errors = measure(artifacts[reference], run.artifact, exported, images)
        for count in threads:
            timed = (
                profile(run.artifact, exported, count, calls) if run.runtime == "openvino" else None
            )
            ident = {
                "model_id": model_id,
                "variant": run.variant,
                "runtime": run.runtime,
                "threads": count,
            }
            rows += variant_rows(ident, layers, peaks, timed, errors)
    return rows


@dataclass
class InspectStage(Stage):
    """Inspecting as a stage: a unit per model, its record beside its layers.csv."""

    root: Path
    models: list[str]
    threads: list[int]
    peaks: dict[str, Any]
    images: np.ndarray | None  # float32 validation images (or tiles) for the per-layer error
    calls: int = 30

    name = "inspect"

    def units(self) -> list[Unit]:
        run = RunFolder(self.root)
        images = array_digest(self.images) if self.images is not None else ""
        units = []
        for model_id in self.models:
            runs = variant_runs(run.model_dir(model_id))
            inputs = {
                "artifacts": {r.variant: artifact_digest(r.artifact) for r in runs},
                "threads": self.threads,
                "calls": self.calls,
                "images_sha256": images,
                "peaks": self.peaks,
                "version": VERSION,
            }
            table = run.layers(model_id)
            units.append(Unit((model_id,), sidecar_path(table), inputs, (table,), model_id))
        return units

    def run(self, group: list[Unit], progress: Any = None) -> None:
        run = RunFolder(self.root)
        for unit in group:
            model_id = unit.key[0]
            rows = model_tables(
                run.model_dir(model_id),
                model_id,
                self.threads,
                self.peaks,
                self.images,
                self.calls,
            )
            write_csv(unit.outputs[0], rows, COLUMNS)
            write_record(unit)

    def merge(self, units: list[Unit], failures: dict) -> list[Path]:
        return [unit.outputs[0] for unit in units]


def inspect_run(
    run_dir: Path,
    cfg: Any,
    peaks: dict,
    images: np.ndarray | None,
    progress: Any = None,
    models: list[str] | None = None,
) -> list[Path]:
    """layers.csv of every model in a run folder (cfg.inspect.models, or `models`), at the
    bench's thread counts; `images`: uint8 validation images for the per-layer error."""
    from unetq.bench.run import resolve_threads
    from unetq.models import to_input

    run = RunFolder(run_dir)
    wanted = models or cfg.inspect.models
    models = [m for m in keras_model_ids(run) if not wanted or m in wanted]
    floats = to_input(images[: cfg.inspect.error_images]) if images is not None else None
    threads = resolve_threads(cfg.bench.threads)
    stage = InspectStage(Path(run_dir), models, threads, peaks, floats, cfg.inspect.calls)
    return run_stage(stage, progress)


def keras_model_ids(run: RunFolder) -> list[str]:
    """The run's models the per-layer view reads: Keras ones (a user's ONNX / TFLite model has
    no Keras layers to attribute costs to)."""
    return [m for m in run.model_ids() if run.model_file(m).suffix == ".keras"]


def inspect_model_dir(model_dir: Path, progress: Any = None) -> tuple[Path, str | None]:
    """`unetq inspect RUN/models/ID`: its layers.csv, computed unless current; (path, a note
    when the per-layer error could not be measured)."""
    run = check_model_dir(model_dir)
    cfg = run.load_config()
    images, note = _validation_images(cfg, progress)
    [path] = inspect_run(
        run.root, cfg, run_peaks(run, cfg), images, progress, [Path(model_dir).name]
    )
    return path, note


def check_model_dir(model_dir: Path) -> RunFolder:
    """The run folder of a model folder (RUN/models/ID), or a one-line error."""
    from unetq.runfolder import ORIGINAL_FILES, run_of_artifact

    model_dir = Path(model_dir)
    given = [f for f in ORIGINAL_FILES if f != MODEL_FILE and (model_dir / f).is_file()]
    if given:
        raise UnetqError(
            f"{model_dir} holds a model given as {given[0]}; the per-layer view reads Keras models"
        )
    run = run_of_artifact(model_dir / MODEL_FILE)
    if run is None or not (model_dir / MODEL_FILE).is_file():
        raise UnetqError(
            f"{model_dir} is not a model folder of a unetq run (RUN/models/ID with {MODEL_FILE}); "
            "for a model file of your own use --model FILE"
        )
    return run


def run_peaks(run: RunFolder, cfg: Any) -> dict[str, Any]:
    """The peaks in the run's machine.json, else this machine's (bench.peaks.cached_peaks, kept
    in machine.json too when it describes this machine)."""
    from unetq.bench.machine import machine_info
    from unetq.bench.peaks import cached_peaks, with_peaks
    from unetq.bench.run import resolve_threads

    recorded = read_json(run.machine)
    if recorded.get("peaks"):
        return recorded["peaks"]
    peaks = cached_peaks(resolve_threads(cfg.bench.threads))
    here = machine_info()
    if recorded and all(recorded.get(k) == here.get(k) for k in ("cpu_model", "isa", "versions")):
        write_json(run.machine, with_peaks(recorded, peaks))
    return peaks


def _validation_images(cfg: Any, progress: Any) -> tuple[np.ndarray | None, str | None]:
    """The run's validation images (or tiles) for the per-layer error, if its data is here."""
    from unetq.data import load_inputs, open_dataset

    index = open_dataset(cfg.data, progress=progress, download=False)
    if index is None:
        return None, "the run's dataset is not here: no per-layer error (pass it as UNETQ_DATA_DIR)"
    return load_inputs(index, "val", cfg.data, progress=progress).images, None


def keras_rows(model_path: Path, peaks: dict[str, Any]) -> list[dict[str, Any]]:
    """`unetq inspect --model FILE`: a Keras model's layers, their cost and bounds at f32 on one
    thread of this machine (no variant, no measured time)."""
    from unetq.inside.layers import model_layers
    from unetq.runtimes import load_keras_model

    model = load_keras_model(Path(model_path))
    ident = {"model_id": Path(model_path).stem, "variant": "keras", "runtime": "keras"}
    return variant_rows({**ident, "threads": 1}, model_layers(model), peaks)
