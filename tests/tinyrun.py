"""A tiny run folder built by hand, shared by the robustness and cross-dataset tests.

Two untrained xception U-Nets at 32 px (f=4 and f=8, batch norm, "2 epochs"), the f=4 one
compressed to tflite-fp32 and tflite-int8, on the built-in synthetic dataset (40 images).
Built once per test session (about 20 s); tests copy it with `copy_run` before changing it.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

SIZE = 32
MODELS = {"xception-f4-bn-e2": 4, "xception-f8-bn-e2": 8}
COMPRESSED = "xception-f4-bn-e2"  # the other model has only its keras variant
VARIANTS = ["keras", "tflite-fp32", "tflite-int8", "openvino-fp32"]
ROBUSTNESS_VARIANTS = ["keras", "tflite-fp32", "tflite-int8"]
TEST_IMAGES = 4  # synthetic_count 40 -> train 32 / val 4 / test 4


@dataclass(frozen=True)
class TinyRun:
    run_dir: Path  # pristine: copy before changing anything
    cache_dir: Path  # UNETQ_CACHE_DIR holding the synthetic dataset and its arrays


_BUILT: dict[str, TinyRun] = {}


def tiny_config():
    from unetq.config import StudyConfig

    return StudyConfig.model_validate(
        {
            "name": "tiny",
            "data": {"source": "synthetic", "synthetic_count": 40, "image_size": SIZE},
            "train": {"filters": [4, 8], "batchnorm": [True], "epochs": [2], "batch_size": 4},
            "compress": {"variants": VARIANTS, "calibration_images": 8, "verify_images": 2},
            "bench": {"runtimes": ["keras", "litert"], "peaks": "off"},
            "robustness": {
                "conditions": ["gaussian_noise", "occlusion"],
                "severities": [1, 2],
                "variants": ROBUSTNESS_VARIANTS,
                "max_images": TEST_IMAGES,
            },
        }
    )


def tiny_run(tmp_path_factory) -> TinyRun:
    """The session's tiny run folder (built on first use)."""
    if "run" not in _BUILT:
        root = tmp_path_factory.mktemp("tinyrun")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("UNETQ_CACHE_DIR", str(root / "cache"))
            mp.delenv("UNETQ_DATA_DIR", raising=False)
            _build(root / "run")
        _BUILT["run"] = TinyRun(run_dir=root / "run", cache_dir=root / "cache")
    return _BUILT["run"]


def copy_run(tiny: TinyRun, dest: Path) -> Path:
    shutil.copytree(tiny.run_dir, dest)
    return dest


def _build(run_dir: Path) -> None:
    from rich.console import Console

    from unetq.compress import compress_model
    from unetq.config import to_toml
    from unetq.data import load_split
    from unetq.fileio import write_text
    from unetq.models import build_model
    from unetq.study import StudyContext, step_data

    cfg = tiny_config()
    run_dir.mkdir(parents=True)
    write_text(run_dir / "config.toml", to_toml(cfg))
    ctx = StudyContext(cfg=cfg, run_dir=run_dir, console=Console(file=io.StringIO()), progress=None)
    step_data(ctx)  # dataset.json, as a study writes it
    for model_id, filters in MODELS.items():
        folder = run_dir / "models" / model_id
        folder.mkdir(parents=True)
        build_model("xception", filters, True, ctx.index.num_classes, SIZE).save(
            folder / "model.keras"
        )
    train = load_split(ctx.index, "train", SIZE)
    val = load_split(ctx.index, "val", SIZE)
    folder = run_dir / "models" / COMPRESSED
    compress_model(
        folder / "model.keras",
        VARIANTS,
        folder,
        calibration=train.images[:8],
        verify=val.images[:2],
        cfg=cfg.compress,
    )
