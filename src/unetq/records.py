"""Typed records that cross module borders. Each becomes one CSV row (see fileio.record_dict)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MODEL_ID = re.compile(r"^(?P<arch>.+)-f(?P<filters>\d+)-(?P<norm>bn|nobn)-e(?P<epochs>\d+)$")


@dataclass(frozen=True)
class ModelId:
    """What a grid model's id says: `xception-f32-bn-e50` <-> (xception, 32, True, 50)."""

    arch: str
    filters: int
    batchnorm: bool
    epochs: int

    def __str__(self) -> str:
        return f"{self.run_id}-e{self.epochs}"

    @property
    def run_id(self) -> str:
        """The training run the model comes from (shared by every epoch horizon)."""
        return f"{self.arch}-f{self.filters}-{'bn' if self.batchnorm else 'nobn'}"

    @classmethod
    def parse(cls, text: str) -> ModelId | None:
        """The parts of a grid model's id; None for any other name (a user's own model)."""
        m = _MODEL_ID.match(str(text))
        if m is None:
            return None
        return cls(m["arch"], int(m["filters"]), m["norm"] == "bn", int(m["epochs"]))

    def study_columns(self) -> dict[str, object]:
        """The original study's column names."""
        return {
            "Model": str(self),
            "Epoch": self.epochs,
            "Filters": self.filters,
            "Normalization": "BatchNorm" if self.batchnorm else "NoBatchNorm",
        }


@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid. `epochs` is its training horizon."""

    arch: str
    filters: int
    batchnorm: bool
    epochs: int
    image_size: int
    num_classes: int

    @property
    def identity(self) -> ModelId:
        return ModelId(self.arch, self.filters, self.batchnorm, self.epochs)

    @property
    def model_id(self) -> str:
        return str(self.identity)

    @property
    def run_id(self) -> str:
        return self.identity.run_id


@dataclass(frozen=True)
class InputNorm:
    """The pixels a model expects: input[c] = (pixel[c] - mean[c]) / std[c] with pixels in
    0..255, channel c of the image in RGB order, or in BGR order when `bgr`."""

    name: str  # a preset (unit, tf, raw, imagenet, caffe) or 'mean/std'
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False

    def describe(self) -> str:
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1 and not self.bgr:
            lo, hi = ((v - self.mean[0]) / self.std[0] for v in (0.0, 255.0))
            return f"pixels in [{lo:g}, {hi:g}]"
        order = "BGR" if self.bgr else "RGB"
        mean = ", ".join(f"{v:g}" for v in self.mean)
        std = ", ".join(f"{v:g}" for v in self.std)
        return f"{order} pixels 0..255 minus mean ({mean}) over std ({std})"


@dataclass(frozen=True)
class ModelInfo:
    """A user's own model as `unetq benchmark` brought it in (models/<model_id>/model.json)."""

    source: str  # the file the user gave
    source_sha256: str
    input_hw: tuple[int, int]  # the static size every variant is exported at
    size_fixed_by_unetq: bool  # the model's own input size was not fixed
    num_classes: int  # 2 for a one-channel (binary) head
    input_norm: InputNorm
    norm_from: str  # where input_norm comes from: a flag, a layer of the model, the default
    output: str  # 'probabilities' (softmax / sigmoid head) or 'logits'
    output_channels: int  # 1 for a binary head, else num_classes
    threshold: float | None = None  # a binary head's foreground cut, in probability
    format: str = "keras"  # the file the user gave: 'keras', 'onnx' or 'tflite'
    layout: str = "NHWC"  # its image layout: 'NHWC', or 'NCHW' (an ONNX model)

    def describe_head(self) -> str:
        if self.output_channels != 1:
            return f"{self.num_classes} classes ({self.output})"
        kind = "sigmoid" if self.output == "probabilities" else "logit"
        return f"one {kind} channel, foreground where p > {self.threshold:g}"

    @classmethod
    def from_json(cls, data: dict) -> ModelInfo | None:
        """The record model.json holds (also the form before input_norm), or None."""
        data = dict(data)
        if "input_range" in data:  # written before --input-norm: a range [lo, hi]
            lo, hi = data.pop("input_range")
            std = 255.0 / (hi - lo)
            data["input_norm"] = {"name": "range", "mean": [-lo * std] * 3, "std": [std] * 3}
            data["norm_from"] = data.pop("range_from", "")
            data.setdefault("output_channels", data.get("num_classes"))
        try:
            norm = data.pop("input_norm")
            norm = InputNorm(
                norm["name"], tuple(norm["mean"]), tuple(norm["std"]), norm.get("bgr", False)
            )
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            known["input_hw"] = tuple(known["input_hw"])
            return cls(input_norm=norm, **known)
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class TrainRecord:
    """One row of trained_models_info.csv."""

    model_id: str
    arch: str
    filters: int
    batchnorm: bool
    epochs: int
    image_size: int
    batch_size: int
    learning_rate: float
    bn_momentum: float
    params: int
    gmacs: float
    epochs_run: int
    best_epoch: int
    wall_time_s: float
    seconds_per_epoch: float
    peak_rss_mb: float
    best_val_loss: float
    final_val_loss: float
    val_fg_iou: float
    collapsed: bool  # predicts one class for >= 99.5% of validation pixels (truth is not)
    model_path: str  # relative to the run folder
    optimizer: str = "adam"
    augment: bool = False
    seed: int = 42
    train_images: int = 0
    val_images: int = 0
    val_max_class_share: float = 0.0  # share of validation pixels predicted as the commonest class
    lr_schedule: str = "constant"


@dataclass
class CompressRecord:
    """One row of compressed_models_info.csv."""

    model_id: str
    variant: str
    path: str
    size_bytes: int
    size_ratio_to_fp32: float
    convert_seconds: float
    agreement: float  # share of verification pixels whose class equals the keras model's
    max_abs_diff: float  # largest |p_variant - p_keras| over class probabilities
    verify_images: int
    precision: str = ""  # as its runtime reports it: fp32, fp16-weights, int8, int8+bf16, ...
    io_dtype: str = ""  # dtype of the model's input/output tensors: float32 or uint8
    error: str = ""  # why the variant could not be made (then it has no artifact)


@dataclass
class ImageResult:
    """One row of model_performance_individual_results.csv: one (model, variant, runtime, image)."""

    model_id: str
    variant: str
    runtime: str
    split: str
    image: str
    fg_iou: float
    fg_dice: float
    miou: float
    pixel_acc: float
    agreement: float
    seed_iou: float
    seed_dice: float
    background_class: int | None = None  # the dataset's; needed for dataset-level fg scores
    confusion: list[int] = field(default_factory=list)  # row-major [true, pred], C*C counts


@dataclass
class BenchRecord:
    """Latency and memory of one (model, variant, runtime, threads)."""

    model_id: str
    variant: str
    runtime: str
    threads: int
    precision: str
    repeats: int
    warmup: int
    latency_ms_median: float
    latency_ms_p95: float
    latency_ms_mean: float
    latency_ms_std: float
    images_per_s: float
    size_bytes: int
    rss_after_imports_mb: float | None = None
    rss_after_load_mb: float | None = None
    peak_rss_mb: float | None = None
    model_memory_mb: float | None = None  # peak_rss_mb - rss_after_imports_mb
    latency_ms_min: float | None = None
    bench_images: int | None = None  # distinct images cycled through in the timed calls
    load_average_1m: float | None = None  # machine load when timing began (others' work skews)
    # median of each round's block of timed calls (bench.measure_interleaved); pairs rounds with
    # keras' for speedup_vs_keras_paired, then left out of the CSV
    round_medians_ms: list[float | None] | None = None
    round_samples_ms: list[list[float]] | None = None  # each round's block; for the intervals
    session: str | None = None  # measurements with the same session took turns in the same rounds
    # tile mode: whole images timed end to end (cut into tiles, model calls, stitch), their mean
    # ms and mean tile count (compare with latency_ms_median x whole_image_tiles_mean)
    whole_images_timed: int | None = None
    whole_image_ms_mean: float | None = None
    whole_image_tiles_mean: float | None = None


@dataclass
class ThroughputRecord:
    """One (model, variant, runtime, threads, setting) measured over streams of images
    (bench.throughput): images per second at every usable core, rounds like the latency's."""

    model_id: str
    variant: str
    runtime: str
    threads: int
    setting: str  # "batch N" (N images per call) or "async" (openvino's asynchronous requests)
    batch: int  # images per call, or asynchronous requests in flight
    precision: str
    images_per_round: int
    rounds: int
    images_per_s: float  # 1000 / the median over rounds of ms per image
    images_per_s_ci95_low: float | None
    images_per_s_ci95_high: float | None
    ms_per_image_rounds: list[float | None]  # each round's ms per image (pairs with keras')
    peak_rss_mb: float | None = None
    model_memory_mb: float | None = None  # at this setting: peak minus after imports
    load_average_1m: float | None = None
    session: str | None = None
    error: str | None = None  # why the setting could not run (its figures are then empty)
