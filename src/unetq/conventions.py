"""What a user says about their own model's pixels and head (`unetq benchmark`'s flags), read
and checked without loading anything heavy, so a usage error answers at once."""

from __future__ import annotations

import dataclasses
import math

from unetq.errors import ConfigError
from unetq.records import InputNorm

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 0.485, 0.456, 0.406 of 255 (torch mode)
IMAGENET_STD = (58.395, 57.12, 57.375)  # 0.229, 0.224, 0.225 of 255
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
INPUT_NORMS = {
    "unit": InputNorm("unit", (0.0,) * 3, (255.0,) * 3),  # [0, 1]
    "tf": InputNorm("tf", (127.5,) * 3, (127.5,) * 3),  # [-1, 1]
    "raw": InputNorm("raw", (0.0,) * 3, (1.0,) * 3),  # [0, 255]
    "imagenet": InputNorm("imagenet", IMAGENET_MEAN, IMAGENET_STD),
    "caffe": InputNorm("caffe", CAFFE_MEAN_BGR, (1.0,) * 3, bgr=True),
}
INPUT_RANGES = {"0,1": "unit", "-1,1": "tf", "0,255": "raw"}  # --input-range, the older flag
OUTPUTS = ("probabilities", "logits")


@dataclasses.dataclass(frozen=True)
class Conventions:
    """What the user says about the model's input and output (None: found from the model)."""

    input_norm: str | None = None  # a preset name of INPUT_NORMS
    input_range: str | None = None  # 0,1 / -1,1 / 0,255
    mean: str | None = None  # "R,G,B", 0..255 or 0..1
    std: str | None = None
    bgr: bool = False
    output: str | None = None  # probabilities / logits
    threshold: float | None = None  # a one-channel head's foreground cut


def input_norm_from_flags(said: Conventions) -> tuple[InputNorm | None, str]:
    """The InputNorm the flags give, or None when they say nothing; checks the flags."""
    given = [
        flag
        for flag, value in (
            ("--input-norm", said.input_norm),
            ("--input-range", said.input_range),
            ("--mean/--std", said.mean or said.std),
        )
        if value
    ]
    if len(given) > 1:
        raise ConfigError(f"give one of {' and '.join(given)}: they say the same thing")
    if said.output is not None and said.output not in OUTPUTS:
        raise ConfigError(f"--output '{said.output}' is not one of {', '.join(OUTPUTS)}")
    if said.threshold is not None and not 0.0 < said.threshold < 1.0:
        raise ConfigError(f"--threshold {said.threshold:g} is not between 0 and 1")
    if said.bgr and not (said.mean or said.std):
        raise ConfigError("--bgr goes with --mean and --std (or --input-norm caffe)")
    if said.input_norm is not None:
        if said.input_norm not in INPUT_NORMS:
            raise ConfigError(
                f"--input-norm '{said.input_norm}' is not one of {', '.join(INPUT_NORMS)}"
            )
        return INPUT_NORMS[said.input_norm], "--input-norm"
    if said.input_range is not None:
        if said.input_range not in INPUT_RANGES:
            raise ConfigError(
                f"--input-range '{said.input_range}' is not one of {', '.join(INPUT_RANGES)}"
            )
        return INPUT_NORMS[INPUT_RANGES[said.input_range]], "--input-range"
    if said.mean or said.std:
        return _mean_std(said.mean, said.std, said.bgr)
    return None, ""


def _mean_std(mean_text: str | None, std_text: str | None, bgr: bool) -> tuple[InputNorm, str]:
    if not (mean_text and std_text):
        raise ConfigError("give --mean and --std together (three values each, R,G,B)")
    mean, std = _three("--mean", mean_text), _three("--std", std_text)
    if min(std) <= 0:
        raise ConfigError(f"--std {std_text}: every value must be above 0")
    # Both in 0..1 (torchvision's 0.485 / 0.229 style) or both in 0..255 (caffe's 103.9 style).
    unit = max(*mean, *std) <= 1.0
    scale = 255.0 if unit else 1.0
    norm = InputNorm("mean/std", _scaled(mean, scale), _scaled(std, scale), bgr)
    return norm, f"--mean/--std (read as {'0..1' if unit else '0..255'} pixel units)"


def _scaled(values: tuple[float, ...], scale: float) -> tuple[float, float, float]:
    return tuple(round(v * scale, 6) for v in values)


def _three(flag: str, text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{flag} '{text}' is not three numbers R,G,B")
    return values
