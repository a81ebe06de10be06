"""The single-image panel: input, ground truth, each variant's prediction and its disagreement."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from unetq.config import tile_overlap  # noqa: E402
from unetq.data import load_whole, open_dataset  # noqa: E402
from unetq.errors import UnetqError  # noqa: E402
from unetq.fileio import write_bytes  # noqa: E402
from unetq.runfolder import RunFolder  # noqa: E402
from unetq.runtimes import load_segmenter  # noqa: E402
from unetq.variants import VARIANTS, is_original, variant_rank  # noqa: E402


def draw_panel(
    image: np.ndarray,
    truth: np.ndarray,
    predictions: dict[str, np.ndarray],
    num_classes: int,
    title: str = "",
) -> bytes:
    """PNG bytes: row 1 input, truth and predictions; row 2 disagreement with the keras model."""
    names = sorted(predictions, key=variant_rank)
    reference = next((predictions[n] for n in names if is_original(n)), None)
    ncols = 2 + len(names)
    fig, axes = plt.subplots(2, ncols, figsize=(2.1 * ncols, 4.6), squeeze=False)
    cmap = plt.get_cmap("viridis", max(num_classes, 2))
    axes[0][0].imshow(image)
    axes[0][0].set_title("input", fontsize=8)
    axes[0][1].imshow(truth, cmap=cmap, vmin=0, vmax=num_classes - 1)
    axes[0][1].set_title("ground truth", fontsize=8)
    for col, name in enumerate(names, start=2):
        pred = predictions[name]
        axes[0][col].imshow(pred, cmap=cmap, vmin=0, vmax=num_classes - 1)
        axes[0][col].set_title(name, fontsize=8)
        if reference is not None:
            differs = pred != reference
            overlay = image.astype(float) / 255 * 0.5
            overlay[differs] = [1.0, 0.0, 0.0]
            axes[1][col].imshow(overlay)
            axes[1][col].set_title(f"{differs.mean() * 100:.2f}% differ", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def make_panel(
    run_dir: Path,
    image_name: str | None = None,
    model_id: str | None = None,
    out: Path | None = None,
) -> Path:
    """Predict one test image with every variant of one model and write the panel PNG."""
    run = RunFolder(run_dir)
    cfg = run.load_config()
    models = run.model_ids()
    if not models:
        raise UnetqError(f"no trained models in {run.models_dir}")
    model_id = model_id or models[-1]
    if model_id not in models:
        raise UnetqError(f"no model '{model_id}' in {run.models_dir}")
    index = open_dataset(cfg.data)
    arrays = load_whole(index, cfg.evaluate.split, cfg.data)
    if len(arrays.names) == 0:
        raise UnetqError(f"the {cfg.evaluate.split} split of {index.root} is empty")
    name = image_name or arrays.names[0]
    if name not in arrays.names:
        raise UnetqError(f"image '{name}' is not in the {cfg.evaluate.split} split of {index.root}")
    i = arrays.names.index(name)
    image, truth = arrays.images[i], arrays.masks[i]
    predictions = {}
    for variant in VARIANTS.values():
        artifact = run.artifact(model_id, variant.name)
        if artifact.exists():
            predictor = load_segmenter(variant.runtime, artifact, 1, tile_overlap(cfg.data))
            predictions[variant.name] = predictor.predict(image[None])[0]
    png = draw_panel(image, truth, predictions, index.num_classes, f"{model_id}: {name}")
    out = out or run.panel
    write_bytes(out, png)
    return out
