"""The run folder: every file and folder name in it, and how to find a run's models.

```
runs/<study>/
  config.toml  dataset.json  machine.json  steps.json
  models/<model_id>/model.keras, history.csv, done.json, <variant>.tflite (+ .json sidecar)
  models/<model_id>/layers.csv      per layer and variant: shape, MACs, bytes, time, bound, error
  models/.train/<run_id>/           training resume state
  trained_models_info.csv  compressed_models_info.csv
  model_performance_individual_results.csv  model_performance_average_results.csv
  throughput_results.csv  robustness.csv  report/index.html  report/panel.png
  .eval/<model_id>/  .bench/<model_id>/  .throughput/<model_id>/  .robustness/   part files
  .lock                             held by the one process working here (its pid, host, command)
  cross/<name>/                     the run's models on another dataset (same names inside)
```
Every other module asks this one for a path; no file name is spelled anywhere else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from unetq.config import StudyConfig, load_toml, override
from unetq.errors import ConfigError, UnetqError
from unetq.variants import VARIANTS, Variant

CONFIG_FILE = "config.toml"
MODELS_DIR = "models"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
DONE_FILE = "done.json"
TRAIN_STATE_DIR = ".train"
TRAINED_CSV = "trained_models_info.csv"
COMPRESSED_CSV = "compressed_models_info.csv"
INDIVIDUAL_CSV = "model_performance_individual_results.csv"
AVERAGE_CSV = "model_performance_average_results.csv"
ROBUSTNESS_CSV = "robustness.csv"


# the model as trained or given, by format: model.keras, or a user's model.onnx / model.tflite
ORIGINAL_FILES = tuple(f"model{v.suffix}" for v in VARIANTS.values() if v.original)


def artifact_path(model_dir: Path, variant: str | Variant) -> Path:
    """`model.<suffix>` for an original (model.keras), else `<variant><suffix>` (e.g.
    tflite-int8.tflite)."""
    name = variant.name if isinstance(variant, Variant) else variant
    if name not in VARIANTS:
        raise UnetqError(f"unknown variant '{name}' (choose from {', '.join(VARIANTS)})")
    if VARIANTS[name].original:
        return Path(model_dir) / f"model{VARIANTS[name].suffix}"
    return Path(model_dir) / f"{name}{VARIANTS[name].suffix}"


def model_id_of(model_path: Path) -> str:
    """models/<model_id>/model.keras (model.onnx, model.tflite) -> model_id; any other file ->
    its stem."""
    model_path = Path(model_path)
    if model_path.name in ORIGINAL_FILES and model_path.parent.name:
        return model_path.parent.name
    return model_path.stem


def model_origin(model_file: Path) -> str:
    """The format of a model file: 'onnx', 'tflite', else 'keras'."""
    return {".onnx": "onnx", ".tflite": "tflite"}.get(Path(model_file).suffix, "keras")


def artifact_parts(artifact: Path) -> list[Path]:
    """The files that make up an artifact: itself, and OpenVINO's .bin beside an .xml."""
    artifact = Path(artifact)
    return [artifact, artifact.with_suffix(".bin")] if artifact.suffix == ".xml" else [artifact]


def artifact_size(artifact: Path) -> int:
    """Bytes on disk of an artifact and its parts."""
    return sum(p.stat().st_size for p in artifact_parts(artifact))


def variant_report(model_dir: Path, variant: str, suffix: str) -> Path:
    """A report file a converter wrote beside a variant, e.g. tflite-int8-mixed.layers.csv."""
    return Path(model_dir) / f"{variant}{suffix}"


@dataclass(frozen=True)
class VariantRun:
    """One way to run a model's variant: its artifact on one runtime."""

    variant: str
    runtime: str
    artifact: Path
    slow: bool  # reference kernels: evaluated and timed on fewer images


def variant_runs(model_dir: Path, runtimes: Iterable[str] | None = None) -> list[VariantRun]:
    """Every variant whose artifact exists in model_dir, the original first, then in registry
    order; only those whose runtime `runtimes` holds (None: all)."""
    keep = None if runtimes is None else set(runtimes)
    runs = []
    for name in sorted(VARIANTS, key=lambda v: not VARIANTS[v].original):  # stable
        variant = VARIANTS[name]
        artifact = artifact_path(model_dir, name)
        present = all(p.exists() for p in artifact_parts(artifact))
        if present and (keep is None or variant.runtime in keep):
            runs.append(VariantRun(name, variant.runtime, artifact, variant.slow))
    return runs


def stamp_path(part: Path) -> Path:
    """`<part>.json` beside a part file: what it was computed from (e.g. the artifact digest)."""
    return part.with_suffix(".json")


def train_state_files(epoch: int) -> tuple[str, str]:
    """(model + optimizer after `epoch`, best weights as of `epoch`): file names in train_state."""
    return f"state-e{epoch}.keras", f"best-e{epoch}.weights.npz"


TRAIN_STATE_FILE = "state.json"


def sidecar_path(artifact: Path) -> Path:
    """`<artifact>.json`: how an artifact was made (source digest, settings, verification)."""
    return artifact.with_name(artifact.name + ".json")


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- files at the top --------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def dataset(self) -> Path:
        return self.root / "dataset.json"

    @property
    def machine(self) -> Path:
        return self.root / "machine.json"

    @property
    def steps(self) -> Path:
        return self.root / "steps.json"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the one process working in the folder (unetq.runlock)."""
        return self.root / ".lock"

    @property
    def trained_csv(self) -> Path:
        return self.root / TRAINED_CSV

    @property
    def compressed_csv(self) -> Path:
        return self.root / COMPRESSED_CSV

    @property
    def individual_csv(self) -> Path:
        return self.root / INDIVIDUAL_CSV

    @property
    def average_csv(self) -> Path:
        return self.root / AVERAGE_CSV

    @property
    def throughput_csv(self) -> Path:
        return self.root / "throughput_results.csv"

    @property
    def robustness_csv(self) -> Path:
        return self.root / ROBUSTNESS_CSV

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def panel(self) -> Path:
        return self.report_dir / "panel.png"

    # --- models ------------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.root / MODELS_DIR

    def model_dir(self, model_id: str) -> Path:
        return self.models_dir / model_id

    def model_file(self, model_id: str) -> Path:
        """The model as trained (model.keras) or as a user gave it (model.onnx, model.tflite)."""
        folder = self.model_dir(model_id)
        return next(
            (folder / f for f in ORIGINAL_FILES if (folder / f).exists()), folder / MODEL_FILE
        )

    def history(self, model_id: str) -> Path:
        return self.model_dir(model_id) / HISTORY_FILE

    def done_marker(self, model_id: str) -> Path:
        return self.model_dir(model_id) / DONE_FILE

    def layers(self, model_id: str) -> Path:
        """The per-layer table of every variant of a model (unetq.inside)."""
        return self.model_dir(model_id) / "layers.csv"

    def model_info(self, model_id: str) -> Path:
        """How a user's own model was brought in (`unetq benchmark`): source, input range, size."""
        return self.model_dir(model_id) / "model.json"

    def train_state(self, run_id: str) -> Path:
        return self.models_dir / TRAIN_STATE_DIR / run_id

    def model_ids(self) -> list[str]:
        """Ids of the run's models (folders under models/ holding a model.keras, or a user's
        model.onnx / model.tflite), sorted."""
        if not self.models_dir.is_dir():
            return []
        found = [p for name in ORIGINAL_FILES for p in self.models_dir.glob(f"*/{name}")]
        return sorted({p.parent.name for p in found if not p.parent.name.startswith(".")})

    def artifact(self, model_id: str, variant: str | Variant) -> Path:
        return artifact_path(self.model_dir(model_id), variant)

    # --- part files of unfinished steps ------------------------------------------------------
    def eval_part(self, model_id: str, variant: str) -> Path:
        return self.root / ".eval" / model_id / f"{variant}.csv"

    def eval_reference(self, model_id: str) -> Path:
        """The original's class maps (keras, or the user's file), every variant's agreement
        reference."""
        return self.root / ".eval" / model_id / "keras_classes.npz"

    def bench_part(self, model_id: str, variant: str, runtime: str, threads: int) -> Path:
        return self.root / ".bench" / model_id / f"{variant}@{runtime}@t{threads}.json"

    def bench_parts(self) -> list[Path]:
        return sorted((self.root / ".bench").glob("*/*.json"))

    def throughput_part(
        self, model_id: str, variant: str, runtime: str, threads: int, setting: str
    ) -> Path:
        name = f"{variant}@{runtime}@t{threads}@{setting.replace(' ', '')}.json"
        return self.root / ".throughput" / model_id / name

    def throughput_parts(self) -> list[Path]:
        return sorted((self.root / ".throughput").glob("*/*.json"))

    def robustness_part(self, condition: str, severity: int) -> Path:
        return self.root / ".robustness" / f"{condition}-{severity}.csv"

    def robustness_parts(self) -> list[Path]:
        return sorted((self.root / ".robustness").glob("*.csv"))

    # --- cross-dataset results ---------------------------------------------------------------
    def cross(self, name: str) -> RunFolder:
        """`cross/<name>/`: this run's models on another dataset, with the same file names."""
        return RunFolder(self.root / "cross" / name)

    def crosses(self) -> list[tuple[str, RunFolder]]:
        """(name, folder) of every cross-dataset evaluation that wrote its average CSV."""
        found = sorted((self.root / "cross").glob(f"*/{AVERAGE_CSV}"))
        return [(p.parent.name, RunFolder(p.parent)) for p in found]

    # --- reading -----------------------------------------------------------------------------
    def load_config(self) -> StudyConfig:
        if not self.config.exists():
            raise ConfigError(f"{self.root} is not a unetq run folder (no {CONFIG_FILE})")
        return StudyConfig.model_validate(load_toml(self.config))


def run_config(run: Path, values: dict | None = None) -> StudyConfig:
    """RUN/config.toml (defaults when the run has none) with typed flag values over it."""
    folder = RunFolder(run)
    if not folder.root.is_dir():
        raise UnetqError(f"run folder not found: {run}")
    cfg = folder.load_config() if folder.config.exists() else StudyConfig()
    return override(cfg, values=values)


def run_of_artifact(artifact: Path) -> RunFolder | None:
    """The run folder an artifact lies in (<run>/models/<model_id>/<file>), if it is in one."""
    artifact = Path(artifact).resolve()
    if len(artifact.parents) < 3:
        return None
    run = RunFolder(artifact.parents[2])
    if artifact.parents[1] != run.models_dir or not run.config.exists():
        return None
    return run


def read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """A CSV as a data frame; an empty frame when the file is absent, empty or unreadable."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return pd.DataFrame()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from disk; {} when the file is absent or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) within this process.

    Finished work is matched to the artifact it was made from by content, so a run folder copied
    with `cp -r` (new file times) or moved between machines reruns nothing.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def array_digest(array: Any) -> str:
    """SHA-256 of an array's dtype, shape and bytes: which images a result was computed on."""
    import numpy as np

    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def artifact_digest(artifact: Path) -> str:
    """The digest of an artifact and of the files that belong to it (OpenVINO's .bin)."""
    artifact = Path(artifact)
    weights = artifact.with_suffix(".bin")
    if artifact.suffix == ".xml" and weights.exists():
        return hashlib.sha256(
            (file_digest(artifact) + file_digest(weights)).encode("ascii")
        ).hexdigest()
    return file_digest(artifact)
