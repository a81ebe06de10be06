"""Study configuration: pydantic models, TOML presets shipped in the package, --set overrides."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from unetq.errors import ConfigError
from unetq.losses import LOSSES

Loss = Literal[LOSSES]  # type: ignore[valid-type]
# Option values a command checks against (unetq.cli.options.config_choice) as the config does.
DatasetFormat = Literal["pets", "folder"]
FormatOrAuto = Literal[DatasetFormat, "auto"]  # `unetq data check` detects the layout
Split = Literal["train", "val", "test"]  # the split a study evaluates
SplitProcedure = Literal["seed", "official"]  # how a dataset's pairs are split
Objective = Literal["latency", "throughput"]  # what `unetq recommend` optimises


def not_one_of(value: Any, allowed: Any) -> str | None:
    """Why `value` is not one of the Literal `allowed` ("'x' is not a, b or c"), None if it is."""
    choices = get_args(allowed)
    if value in choices:
        return None
    *head, last = choices
    listed = f"{', '.join(head)} or {last}" if head else last
    return f"'{value}' is not {listed}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    # auto: --data-dir / UNETQ_DATA_DIR, else the download cache, else the download,
    # else (no network) the built-in synthetic dataset.
    source: Literal["auto", "synthetic"] = "auto"
    format: DatasetFormat = "pets"
    data_dir: Path | None = None
    # resize: every image squeezed to image_size x image_size (the study's way, pets' default).
    # tile: models of input image_size x image_size train on random crops of the full-size
    # images and segment whole images by overlapping tiles, scored at native resolution.
    mode: Literal["resize", "tile"] = "resize"
    image_size: int = Field(160, ge=16, le=1024)
    tile_overlap: int = Field(32, ge=0)  # pixels shared by neighbouring tiles (tile mode)
    split: SplitProcedure = "seed"
    split_seed: int = 42
    limit: int | None = Field(None, ge=3)
    # folder datasets: raw mask value -> class index; None = detect binary 0/255, 0/1 or class ids
    mask_values: dict[int, int] | None = None
    background_class: int | None = None
    synthetic_count: int = Field(96, ge=6)

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> DataConfig:
        if self.mode == "tile" and self.tile_overlap >= self.image_size:
            raise ValueError(
                f"tile_overlap {self.tile_overlap} must be smaller than the tile "
                f"(image_size {self.image_size})"
            )
        return self


class TrainConfig(_Strict):
    arch: list[str] = ["xception"]
    filters: list[int] = [32, 64, 128]
    batchnorm: list[bool] = [True, False]
    # One training run per (arch, filters, batchnorm) goes to max(epochs); the model for a
    # shorter horizon is the best checkpoint within its first `e` epochs of that run.
    epochs: list[int] = [50, 100]
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-4, gt=0)
    # cosine: decay to lr_final_fraction * learning_rate over the run's longest horizon
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_final_fraction: float = Field(0.05, ge=0, le=1)
    loss: Loss = "sparse_categorical_crossentropy"  # see unetq.losses
    class_weights: list[float] | None = None  # one per class; None = all 1
    focal_gamma: float = Field(2.0, ge=0)
    tiles_per_image: int = Field(4, ge=1)  # tile mode: random crops of each image per epoch
    bn_momentum: float = Field(0.99, gt=0, lt=1)
    augment: bool = False
    seed: int = 42


class CompressConfig(_Strict):
    variants: list[str] = [  # every variant of unetq.variants.VARIANTS (a test checks)
        "keras",
        "tflite-fp32",
        "tflite-dynamic-int8",
        "tflite-fp16",
        "tflite-int8",
        "tflite-int8-mixed",
        "tflite-int16x8",
        "openvino-fp32",
        "openvino-int8",
        "openvino-int8-guarded",
        "onnxruntime-fp32",
        "onnxruntime-int8",
    ]
    calibration_images: int = Field(100, ge=1)
    verify_images: int = Field(16, ge=1)
    int8_io: Literal["float32", "uint8"] = "float32"
    # guarded variants (tflite-int8-mixed, openvino-int8-guarded): the largest drop of the
    # validation foreground IoU against the float model, in points (0.5 = 0.005 IoU)
    max_iou_drop: float = Field(0.5, ge=0, le=100)
    guard_images: int = Field(64, ge=1)  # validation images the guards measure on
    guard_iterations: int = Field(8, ge=1)  # NNCF accuracy control: most restore steps
    # OpenVINO int8: how NNCF sets each activation's range from the calibration images.
    # "minmax": the lowest and highest value seen (as the TFLite converter does); "mean-minmax":
    # NNCF's default, the mean over images of each image's lowest and highest value, which
    # clips every value above the typical image's highest (see docs/INSIDE.md, the nuclei).
    openvino_ranges: Literal["minmax", "mean-minmax"] = "minmax"


class EvaluateConfig(_Strict):
    split: Split = "test"
    max_images: int | None = Field(None, ge=1)
    # int16x8 runs on LiteRT's slow reference kernels; it is evaluated on fewer images.
    slow_variant_max_images: int = Field(20, ge=1)


class BenchConfig(_Strict):
    runtimes: list[str] = ["keras", "litert", "openvino", "onnxruntime"]
    threads: list[int | Literal["all"]] = [1, "all"]
    repeats: int = Field(30, ge=3)
    warmup: int = Field(5, ge=0)
    memory: bool = True
    models: list[str] | None = None  # None = every trained model
    slow_variant_repeats: int = Field(3, ge=1)
    # each model's measurements are interleaved in this many rounds (see bench.measure_interleaved)
    rounds: int = Field(10, ge=1)
    # this machine's peak multiply-add rates and bandwidth (bench.peaks), measured with the
    # latencies: "full", "tiny" (a seconds-long check for tests) or "off"
    peaks: Literal["full", "tiny", "off"] = "full"
    # throughput at every usable core (bench.throughput): images per second over streams of
    # `throughput_images` images a round, at each batch size, openvino also with asynchronous
    # requests; [] turns it off
    throughput_batches: list[Annotated[int, Field(ge=1)]] = [1, 4, 8]
    throughput_images: int = Field(32, ge=1)
    # None: the best model (highest keras fg IoU evaluated), or every model before evaluation
    throughput_models: list[str] | None = None


class RobustnessConfig(_Strict):
    enabled: bool = True
    models: list[str] | None = None  # None = per filter width, the longest-trained model
    conditions: list[str] = [
        "gaussian_noise",
        "gaussian_blur",
        "brightness",
        "contrast",
        "jpeg",
        "downscale",
        "occlusion",
    ]
    severities: list[int] = [1, 2, 3]
    variants: list[str] = ["keras", "tflite-fp16", "tflite-int8", "tflite-dynamic-int8"]
    max_images: int | None = Field(None, ge=1)
    seed: int = 0


class InspectConfig(_Strict):
    """The per-layer table of every model and variant (unetq.inside)."""

    enabled: bool = True
    models: list[str] | None = None  # None = every model
    calls: int = Field(30, ge=3)  # profiled calls per variant and thread count
    error_images: int = Field(8, ge=1)  # validation images the per-layer error is measured on


class ClusterConfig(_Strict):
    """What each task asks of a Ray cluster (`unetq study --executor ray`); no effect on results."""

    train_cpus: int = Field(2, ge=1)  # one training run: its TensorFlow threads
    task_cpus: int = Field(1, ge=1)  # one model's conversions, or its evaluation
    max_retries: int = Field(3, ge=0)  # times a task whose worker was lost is run again
    # The benchmark runs on the driver's machine, or on the node offering this custom Ray
    # resource (`ray start --resources '{"bench": 1}'`), alone on that machine either way.
    bench_resource: str | None = None
    # Seconds to reach the Ray head at --ray-address (its GCS port, then Ray's handshake) before
    # the study ends with one line, instead of Ray's own retries (minutes).
    connect_timeout_s: float = Field(30, gt=0)


class StudyConfig(_Strict):
    name: str = "study"
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    compress: CompressConfig = CompressConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    bench: BenchConfig = BenchConfig()
    robustness: RobustnessConfig = RobustnessConfig()
    inspect: InspectConfig = InspectConfig()
    cluster: ClusterConfig = ClusterConfig()


def tile_overlap(data: DataConfig) -> int | None:
    """The tile overlap in tile mode, None in resize mode (runtimes.load_segmenter's argument)."""
    return data.tile_overlap if data.mode == "tile" else None


PRESETS = ("seed", "quick", "smoke", "nuclei", "membrane")


def load_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    text = resources.files("unetq.presets").joinpath(f"{name}.toml").read_text()
    return tomllib.loads(text)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def parse_set(assignment: str) -> tuple[str, Any]:
    """`section.key=value` -> (key, value); the value is parsed as TOML, else kept as text."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{assignment}' is not of the form section.key=value")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def _assign(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
    node[parts[-1]] = value


def _apply(raw: dict[str, Any], sets: list[str] | None, values: dict[str, Any] | None):
    """`--set` strings first, then typed values from command-line flags ({"data.data_dir": p})."""
    for assignment in sets or []:
        _assign(raw, *parse_set(assignment))
    for key, value in (values or {}).items():
        if value is not None:
            _assign(raw, key, value)
    return validate(raw)


def build_config(
    preset: str | None = None,
    config_file: Path | None = None,
    sets: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> StudyConfig:
    """The preset, then a TOML file over it, then `--set` overrides, then flag values."""
    raw: dict[str, Any] = load_preset(preset) if preset else {}
    if config_file is not None:
        raw = _merge(raw, load_toml(config_file))
    return _apply(raw, sets, values)


def override(
    cfg: StudyConfig, sets: list[str] | None = None, values: dict[str, Any] | None = None
) -> StudyConfig:
    """A copy of `cfg` (e.g. a run's config.toml) with `--set` overrides and flag values."""
    return _apply(cfg.model_dump(mode="python", exclude_none=True), sets, values)


def validate(raw: dict[str, Any]) -> StudyConfig:
    """A StudyConfig from raw values; the first problem as a one-line ConfigError."""
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"invalid config value at '{where}': {err['msg']}") from None


def to_toml(cfg: StudyConfig) -> str:
    """Serialise a config as TOML (flat sections of scalars and lists only)."""
    lines: list[str] = []
    data = cfg.model_dump(mode="json", exclude_none=True)
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key, value in top.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for section, values in data.items():
        if not isinstance(values, dict):
            continue
        lines.append(f"\n[{section}]")
        nested = {k: v for k, v in values.items() if isinstance(v, dict)}
        for key, value in values.items():
            if key not in nested:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in nested.items():
            lines.append(f"\n[{section}.{key}]")
            lines.extend(f'"{k}" = {_toml_value(v)}' for k, v in value.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
