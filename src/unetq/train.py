"""Training: one run per (arch, filters, batchnorm) serves every epoch horizon; checkpoints; resume.

Layout under the run folder's `models/` (names from unetq.runfolder):
  <model_id>/model.keras    best checkpoint (lowest validation loss) within the horizon's epochs
  <model_id>/history.csv    epochs 1..e: epoch, loss, val_loss, val_fg_iou, seconds
  <model_id>/done.json      written last: the horizon is finished (holds its TrainRecord)
  .train/<run_id>/          resume state (not an artifact): state.json + state-eN.keras
                            (model with optimizer state) + best-eN.weights.h5
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.console import Console

from unetq import fileio
from unetq.data import NativeSplit, grid_tiles, load_native, load_split, random_tiles
from unetq.errors import ConfigError, DataError
from unetq.losses import CROSS_ENTROPY, keras_loss, numpy_loss
from unetq.memory import peak_rss_mb
from unetq.metrics import confusion_matrix, scores
from unetq.models import build_model, count_macs, count_params, to_input
from unetq.records import ModelSpec, TrainRecord
from unetq.runfolder import TRAIN_STATE_FILE, RunFolder, read_json, train_state_files
from unetq.runtimes import set_tf_threads, usable_cores
from unetq.work import Stage, Unit, read_record, run_stage, write_record

HISTORY_COLUMNS = ["epoch", "loss", "val_loss", "val_fg_iou", "seconds"]
# A checkpoint "collapsed" when one class takes at least this share of its validation predictions
# while the truth is more varied than that.
COLLAPSE_SHARE = 0.995
# Keras' sparse categorical cross-entropy clips probabilities to [EPSILON, 1 - EPSILON].
EPSILON = 1e-7

_console = Console(stderr=True)


class SplitArraysLike(Protocol):
    names: list[str]
    images: np.ndarray  # uint8 [N, S, S, 3]
    masks: np.ndarray  # uint8 [N, S, S]


@dataclass
class _State:
    """What survives a kill: everything needed to continue after the last completed epoch."""

    fingerprint: dict[str, Any]
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_file: str | None = None  # weights of the best epoch so far
    state_file: str | None = None  # model + optimizer after `epoch`
    peak_rss_mb: float = 0.0
    next_epoch_seed: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- metrics


def foreground_iou(confusion: np.ndarray, background_class: int) -> float:
    """IoU of foreground (every class but `background_class`) vs background (unetq.metrics)."""
    return scores(confusion, background_class)["fg_iou"]


def max_class_share(confusion: np.ndarray) -> tuple[float, float]:
    """(largest share of one class among predictions, largest share of one class in the truth)."""
    cm = np.asarray(confusion, dtype=np.float64)
    total = cm.sum()
    if not total:
        return 0.0, 0.0
    return float(cm.sum(axis=0).max() / total), float(cm.sum(axis=1).max() / total)


def is_collapsed(confusion: np.ndarray, share: float = COLLAPSE_SHARE) -> bool:
    """True when (nearly) every pixel is predicted as one class while the truth is not."""
    pred_share, truth_share = max_class_share(confusion)
    return pred_share >= share and truth_share < share


def evaluate_split(
    model: Any, arrays: SplitArraysLike, batch_size: int, num_classes: int, cfg: Any = None
) -> tuple[float, np.ndarray]:
    """Inference-mode pass over a split: (validation loss, confusion matrix).

    Cross-entropy is Keras' formula on the softmax output (probabilities clipped to
    [1e-7, 1 - 1e-7], renormalised), averaged over every pixel of every image, i.e. what
    `model.evaluate` reports. The other losses of `cfg.loss` (a TrainConfig) are averaged over
    batches, weighted by their pixels.
    """
    kind = cfg.loss if cfg is not None else CROSS_ENTROPY
    weights = cfg.class_weights if cfg is not None else None
    total_loss = 0.0
    pixels = 0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for start in range(0, len(arrays.images), batch_size):
        x = to_input(arrays.images[start : start + batch_size])
        y = arrays.masks[start : start + batch_size].astype(np.int64)
        probs = np.asarray(model.predict_on_batch(x), dtype=np.float64)
        if kind == CROSS_ENTROPY and weights is None:
            clipped = np.clip(probs, EPSILON, 1 - EPSILON)
            picked = np.take_along_axis(clipped, y[..., None], axis=-1)[..., 0]
            total_loss += float((np.log(clipped.sum(axis=-1)) - np.log(picked)).sum())
        else:
            gamma = cfg.focal_gamma
            total_loss += y.size * numpy_loss(kind, y, probs, num_classes, weights, gamma)
        pixels += y.size
        confusion += confusion_matrix(y, probs.argmax(axis=-1), num_classes)
    return total_loss / max(pixels, 1), confusion


# --------------------------------------------------------------------------- data


def epoch_batches(
    arrays: SplitArraysLike, batch_size: int, seed: Sequence[int], augment: bool
) -> Any:
    """Batches of one epoch: float32 images in [0, 1], int32 masks.

    The order and the flips depend only on `seed` (e.g. [cfg.seed, epoch]), never on iterator
    state, so an epoch redone after a resume sees exactly the data it would have seen.
    """
    rng = np.random.default_rng(list(seed))
    order = rng.permutation(len(arrays.images))
    flips = rng.random(len(order)) < 0.5 if augment else np.zeros(len(order), dtype=bool)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = to_input(arrays.images[idx])
        y = arrays.masks[idx].astype(np.int32)
        flip = flips[start : start + batch_size]
        if flip.any():
            x[flip] = x[flip, :, ::-1]
            y[flip] = y[flip, :, ::-1]
        yield x, y


def epoch_data(train: Any, seed: Sequence[int], cfg: Any, size: int) -> SplitArraysLike:
    """The training images of one epoch: the split itself, or (tile mode, a NativeSplit)
    `cfg.tiles_per_image` random crops of each image, drawn from the epoch's seed alone."""
    if not isinstance(train, NativeSplit):
        return train
    rng = np.random.default_rng([*seed, 1])
    return random_tiles(train, size, cfg.tiles_per_image, rng)


def _tf_dataset(arrays: SplitArraysLike, batch_size: int, seed: Sequence[int], augment: bool):
    import tensorflow as tf

    size = arrays.images.shape[1]
    signature = (
        tf.TensorSpec([None, size, size, 3], tf.float32),
        tf.TensorSpec([None, size, size], tf.int32),
    )
    steps = math.ceil(len(arrays.images) / batch_size)
    dataset = tf.data.Dataset.from_generator(
        lambda: epoch_batches(arrays, batch_size, seed, augment), output_signature=signature
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)


# --------------------------------------------------------------------------- keras pieces


def _optimizer(cfg: Any, total_steps: int):
    import keras

    makers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    rate = cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        # A few hundred noisy steps at a constant rate leave validation loss jumping between
        # epochs; decaying settles the last epochs, where the longest horizon's model is chosen.
        rate = keras.optimizers.schedules.CosineDecay(
            rate, decay_steps=max(total_steps, 1), alpha=cfg.lr_final_fraction
        )
    return makers[cfg.optimizer](learning_rate=rate)


def _callbacks(on_batch: Callable[[], None], on_epoch: Callable[[dict], None]) -> list[Any]:
    import keras

    class _Hooks(keras.callbacks.Callback):
        """Advances the progress bar per batch; computes validation metrics per epoch."""

        def on_train_batch_end(self, batch, logs=None):
            on_batch()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                on_epoch(logs)

    return [_Hooks()]


def save_weights(path: Path, model: Any) -> None:
    """The model's weights as a NumPy archive, written atomically.

    Not Keras' .weights.h5: HDF5 writes to disk itself, and when the disk refuses a write it
    can crash the process (seen: SIGSEGV in h5py under a file-size limit) instead of raising.
    """
    weights = model.get_weights()
    with fileio.atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, *weights)


def load_weights(path: Path, model: Any) -> None:
    if path.suffix == ".h5":  # resume state written by an older unetq
        model.load_weights(str(path))
        return
    with np.load(path) as data:
        model.set_weights([data[f"arr_{i}"] for i in range(len(data.files))])


# --------------------------------------------------------------------------- bookkeeping


def _fingerprint(spec: ModelSpec, cfg: Any, train: SplitArraysLike, val: SplitArraysLike) -> dict:
    names = hashlib.sha1()
    for name in [*train.names, "|", *val.names]:
        names.update(name.encode() + b"\n")
    return {
        "run_id": spec.run_id,
        "arch": spec.arch,
        "filters": spec.filters,
        "batchnorm": spec.batchnorm,
        "image_size": spec.image_size,
        "num_classes": spec.num_classes,
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optimizer,
        "learning_rate": cfg.learning_rate,
        "lr_schedule": cfg.lr_schedule,
        "lr_final_fraction": cfg.lr_final_fraction,
        # the cosine schedule spans the longest horizon, so changing it changes every epoch
        "lr_decay_epochs": max(cfg.epochs) if cfg.lr_schedule == "cosine" else None,
        "loss": cfg.loss,
        "bn_momentum": cfg.bn_momentum,
        "augment": cfg.augment,
        "seed": cfg.seed,
        "train_images": len(train.images),
        "val_images": len(val.images),
        "split_sha1": names.hexdigest(),
        **_extra_fingerprint(cfg, train),
    }


def _extra_fingerprint(cfg: Any, train: Any) -> dict[str, Any]:
    """Settings that did not exist in earlier versions, only when set: earlier runs resume."""
    extra: dict[str, Any] = {}
    if cfg.class_weights is not None:
        extra["class_weights"] = list(cfg.class_weights)
    if cfg.loss == "focal":
        extra["focal_gamma"] = cfg.focal_gamma
    if isinstance(train, NativeSplit):
        extra["tiles_per_image"] = cfg.tiles_per_image
    return extra


def _unit(folder: RunFolder, spec: ModelSpec, fingerprint: dict) -> Unit:
    """A horizon's unit: done when its done.json says it was trained with these settings."""
    model_id = spec.model_id
    outputs = (folder.model_file(model_id), folder.history(model_id))
    return Unit((model_id,), folder.done_marker(model_id), fingerprint, outputs, spec.run_id)


def _refuse_other_settings(unit: Unit) -> None:
    """A model trained with other settings is not overwritten: the user says where to go."""
    done = read_json(unit.record)
    trained_with = done.get("inputs", done.get("fingerprint"))
    if trained_with is None or trained_with == unit.inputs:
        return
    changed = sorted(k for k in unit.inputs if trained_with.get(k) != unit.inputs[k])
    raise ConfigError(
        f"{unit.record.parent} was trained with different settings "
        f"({', '.join(changed)}); use a new output folder or delete it"
    )


def _read_state(state_dir: Path, fingerprint: dict, console: Console) -> _State | None:
    path = state_dir / TRAIN_STATE_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        state = _State(**raw)
    except (ValueError, TypeError):
        console.print(f"[yellow]ignoring unreadable training state {path}[/]")
        return None
    if state.fingerprint != fingerprint:
        console.print(f"[yellow]training state in {state_dir} is for other settings; restarting[/]")
        return None
    missing = [
        f for f in (state.state_file, state.best_file) if not f or not (state_dir / f).exists()
    ]
    if missing:
        console.print(f"[yellow]training state in {state_dir} is incomplete; restarting[/]")
        return None
    return state


def _write_state(state_dir: Path, state: _State) -> None:
    """Commit point of an epoch: state.json names the files it needs; older ones are removed."""
    fileio.write_json(state_dir / TRAIN_STATE_FILE, state.__dict__)
    keep = {state.state_file, state.best_file, TRAIN_STATE_FILE}
    for path in state_dir.iterdir():
        if path.name not in keep and not path.name.startswith("."):
            path.unlink(missing_ok=True)


def _warn_collapsed(record: TrainRecord, console: Console) -> None:
    if record.batchnorm and record.bn_momentum > 0.9:
        hint = (
            f"batch-norm moving statistics lag behind with train.bn_momentum={record.bn_momentum} "
            "and few training steps; try --set train.bn_momentum=0.9 (with train.augment=true "
            "and a smaller train.batch_size)"
        )
    else:
        hint = "try more epochs, another learning rate or --set train.augment=true"
    console.print(
        f"[bold red]WARNING: {record.model_id} collapsed: its checkpoint predicts one class for "
        f"{record.val_max_class_share:.1%} of validation pixels; {hint}.[/]",
        highlight=False,
        soft_wrap=True,
    )


def _check_inputs(specs: list[ModelSpec], train: SplitArraysLike, val: SplitArraysLike) -> None:
    if not specs:
        raise ConfigError("no models to train (train.epochs is empty?)")
    runs = {(s.run_id, s.image_size, s.num_classes) for s in specs}
    if len(runs) != 1:
        raise ConfigError(f"train_run got specs of different runs: {sorted(runs)}")
    horizons = [s.epochs for s in specs]
    if len(set(horizons)) != len(horizons) or min(horizons) < 1:
        raise ConfigError(f"epoch horizons must be distinct and >= 1, got {horizons}")
    size = specs[0].image_size
    for split, arrays in (("train", train), ("val", val)):
        if len(arrays.images) == 0:
            raise DataError(f"the {split} split is empty: nothing to train or validate on")
        if isinstance(arrays, NativeSplit):
            top = max(int(m.max()) for m in arrays.masks)
            if top >= specs[0].num_classes:
                raise DataError(
                    f"{split} masks hold class {top} but the models have "
                    f"{specs[0].num_classes} classes"
                )
            continue
        if tuple(arrays.images.shape[1:]) != (size, size, 3):
            raise DataError(
                f"{split} images have shape {tuple(arrays.images.shape[1:])}, "
                f"expected ({size}, {size}, 3)"
            )
        if arrays.masks.shape != arrays.images.shape[:3]:
            raise DataError(f"{split} masks have shape {arrays.masks.shape}, expected [N, S, S]")
        top = int(arrays.masks.max())
        if top >= specs[0].num_classes:
            raise DataError(
                f"{split} masks hold class {top} but the models have {specs[0].num_classes} classes"
            )


class _Run:
    """One training run (one arch/filters/batchnorm) and the horizons it still has to deliver."""

    def __init__(self, specs, train, val, cfg, run_dir, progress, background_class):
        self.specs = specs
        self.spec = specs[0]
        self.train = train
        self.val = val
        self.cfg = cfg
        self.folder = RunFolder(run_dir)
        self.progress = progress
        self.background_class = background_class
        self.num_classes = self.spec.num_classes
        self.fingerprint = _fingerprint(self.spec, cfg, train, val)
        self.state_dir = self.folder.train_state(self.spec.run_id)
        self.console = progress.console if progress is not None else _console
        self.records: dict[str, TrainRecord] = {}
        self.params = 0
        self.macs = 0

    @property
    def steps_per_epoch(self) -> int:
        images = len(self.train.images)
        if isinstance(self.train, NativeSplit):
            images *= self.cfg.tiles_per_image
        return math.ceil(images / self.cfg.batch_size)

    def build(self) -> Any:
        s = self.spec
        return build_model(
            s.arch,
            s.filters,
            s.batchnorm,
            s.num_classes,
            s.image_size,
            bn_momentum=self.cfg.bn_momentum,
        )

    def start(self, pending: list[ModelSpec]) -> tuple[Any, _State]:
        """The model to train and its state: resumed from disk when possible, else fresh."""
        import keras

        run_id = self.spec.run_id
        keras.backend.clear_session()
        state = _read_state(self.state_dir, self.fingerprint, self.console)
        if state is not None and min(s.epochs for s in pending) <= state.epoch:
            self.console.print(
                f"[yellow]{run_id}: saved state is at epoch {state.epoch}, past an unfinished "
                "horizon; training again from scratch[/]"
            )
            state = None
        if state is not None:
            try:
                model = keras.models.load_model(self.state_dir / state.state_file)
                self.console.print(f"{run_id}: resuming after epoch {state.epoch}")
                return model, state
            except Exception as exc:  # a damaged state file only costs a restart
                self.console.print(f"[yellow]{run_id}: cannot load saved state ({exc}); restarting")
        keras.utils.set_random_seed(self.cfg.seed)
        model = self.build()
        total_steps = self.steps_per_epoch * max(self.cfg.epochs)
        loss = keras_loss(
            self.cfg.loss, self.num_classes, self.cfg.class_weights, self.cfg.focal_gamma
        )
        model.compile(optimizer=_optimizer(self.cfg, total_steps), loss=loss)
        # Creating the optimizer's variables inside the first traced step makes TF trace the
        # training step twice (seconds per model); create them up front instead.
        model.optimizer.build(model.trainable_variables)
        return model, _State(fingerprint=self.fingerprint)

    def run(self, pending: list[ModelSpec]) -> None:
        session_start = time.perf_counter()
        model, state = self.start(pending)
        export_model = self.build()
        self.params, self.macs = count_params(export_model), count_macs(export_model)
        wall_before = state.history[-1]["wall_s"] if state.history else 0.0
        cfg = self.cfg
        steps = self.steps_per_epoch
        progress = self.progress
        task = progress.add_task(self.spec.run_id, total=steps) if progress is not None else None
        logs_seen: dict[str, Any] = {}

        def on_epoch(logs: dict) -> None:
            val_loss, confusion = evaluate_split(
                model, self.val, cfg.batch_size, self.num_classes, cfg
            )
            logs["val_loss"] = val_loss
            logs["val_fg_iou"] = foreground_iou(confusion, self.background_class)
            logs_seen.update(logs, confusion=confusion)

        def on_batch() -> None:
            if task is not None:
                progress.advance(task)

        callbacks = _callbacks(on_batch, on_epoch)
        try:
            for epoch in range(state.epoch + 1, max(s.epochs for s in pending) + 1):
                if task is not None:
                    progress.reset(task, total=steps, description=f"{self.spec.run_id} e{epoch}")
                started = time.perf_counter()
                logs_seen.clear()
                seed = (cfg.seed, epoch)
                data = epoch_data(self.train, seed, cfg, self.spec.image_size)
                model.fit(
                    _tf_dataset(data, cfg.batch_size, seed, cfg.augment),
                    epochs=epoch,
                    initial_epoch=epoch - 1,
                    shuffle=False,  # the dataset is already in this epoch's seeded order
                    verbose=0,
                    callbacks=callbacks,
                )
                entry = {
                    "epoch": epoch,
                    "loss": float(logs_seen["loss"]),
                    "val_loss": float(logs_seen["val_loss"]),
                    "val_fg_iou": float(logs_seen["val_fg_iou"]),
                    "seconds": round(time.perf_counter() - started, 3),
                    "wall_s": wall_before + time.perf_counter() - session_start,
                    "confusion": logs_seen["confusion"].tolist(),
                }
                self.finish_epoch(state, entry, model, export_model, pending)
        finally:
            if task is not None:
                progress.remove_task(task)

    def finish_epoch(self, state, entry, model, export_model, pending) -> None:
        """Bookkeeping after an epoch, ordered so that a kill at any point leaves a consistent
        state: best weights, then finished horizons, then model + optimizer, then state.json."""
        epoch = entry["epoch"]
        improved = state.best_epoch == 0 or entry["val_loss"] < state.best_val_loss
        if improved:
            state.best_epoch = epoch
            state.best_val_loss = entry["val_loss"]
            state.best_file = train_state_files(epoch)[1]
            save_weights(self.state_dir / state.best_file, model)
        state.history.append(entry)
        state.epoch = epoch
        state.peak_rss_mb = max(state.peak_rss_mb, peak_rss_mb())
        state.next_epoch_seed = [self.cfg.seed, epoch + 1]
        self.console.print(
            f"{self.spec.run_id} epoch {epoch}: loss {entry['loss']:.4f}  val_loss "
            f"{entry['val_loss']:.4f}  val_fg_iou {entry['val_fg_iou']:.3f}  "
            f"{entry['seconds']:.1f}s" + ("  *best" if improved else ""),
            highlight=False,
            soft_wrap=True,
        )
        for spec in pending:
            if spec.epochs == epoch:
                self.export(spec, state, export_model)
        state.state_file = train_state_files(epoch)[0]
        fileio.atomic_save(self.state_dir / state.state_file, model.save)
        _write_state(self.state_dir, state)

    def export(self, spec: ModelSpec, state: _State, export_model: Any) -> None:
        """Write the horizon's model dir: model.keras (best weights, no optimizer state),
        history.csv, then done.json (with the record) last."""
        folder, model_id = self.folder, spec.model_id
        record = self.record(spec, state)
        load_weights(self.state_dir / state.best_file, export_model)
        fileio.atomic_save(folder.model_file(model_id), export_model.save)
        rows = [{k: h[k] for k in HISTORY_COLUMNS} for h in state.history[: spec.epochs]]
        fileio.write_csv(folder.history(model_id), rows, HISTORY_COLUMNS)
        unit = _unit(folder, spec, self.fingerprint)
        write_record(unit, record=fileio.record_dict(record))
        self.records[spec.model_id] = record
        self.console.print(
            f"saved {spec.model_id}: best epoch {record.best_epoch}, val_loss "
            f"{record.best_val_loss:.4f}, val_fg_iou {record.val_fg_iou:.3f}",
            highlight=False,
        )
        if record.collapsed:
            _warn_collapsed(record, self.console)

    def record(self, spec: ModelSpec, state: _State) -> TrainRecord:
        """The record of horizon `spec.epochs`, taken right after that epoch completed."""
        history = state.history[: spec.epochs]
        best = history[state.best_epoch - 1]
        confusion = np.asarray(best["confusion"])
        pred_share, _ = max_class_share(confusion)
        cfg = self.cfg
        model_path = self.folder.model_file(spec.model_id)
        return TrainRecord(
            model_id=spec.model_id,
            arch=spec.arch,
            filters=spec.filters,
            batchnorm=spec.batchnorm,
            epochs=spec.epochs,
            image_size=spec.image_size,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            lr_schedule=cfg.lr_schedule,
            bn_momentum=cfg.bn_momentum,
            params=self.params,
            gmacs=round(self.macs / 1e9, 4),
            epochs_run=len(history),
            best_epoch=int(best["epoch"]),
            wall_time_s=round(history[-1]["wall_s"], 3),
            seconds_per_epoch=round(sum(h["seconds"] for h in history) / len(history), 3),
            peak_rss_mb=round(state.peak_rss_mb, 1),
            best_val_loss=float(best["val_loss"]),
            final_val_loss=float(history[-1]["val_loss"]),
            val_fg_iou=float(best["val_fg_iou"]),
            collapsed=is_collapsed(confusion),
            model_path=model_path.relative_to(self.folder.root).as_posix(),
            optimizer=cfg.optimizer,
            augment=cfg.augment,
            seed=cfg.seed,
            train_images=len(self.train.images),
            val_images=len(self.val.images),
            val_max_class_share=round(pred_share, 6),
        )


def train_run(
    specs: list[ModelSpec],
    train: SplitArraysLike,
    val: SplitArraysLike,
    cfg: Any,
    run_dir: Path,
    progress: Any = None,
    *,
    background_class: int,
) -> list[TrainRecord]:
    """Train one (arch, filters, batchnorm) run to max(epochs); save one model per horizon.

    `cfg` is a TrainConfig; `train`/`val` are SplitArrays (uint8 images [N,S,S,3], masks [N,S,S]);
    `background_class` names the class that is not foreground (pets: 1, folder datasets: 0).

    - One run serves every horizon: the model of horizon e (`<model_id>/model.keras`) is the
      checkpoint with the lowest validation loss among epochs 1..e of that single run, written
      as soon as the run completes epoch e (history.csv holds epochs 1..e). So e50 and e100 come
      from one run; with the same seed, e50 equals a separate 50-epoch run up to TF
      nondeterminism. model.keras holds no optimizer state.
    - Seeding: `keras.utils.set_random_seed(cfg.seed)` before the model is built gives the same
      initial weights; epoch k's data order and flips come from the seed (cfg.seed, k) alone, not
      from iterator state, so a resumed run sees the same data as an uninterrupted one.
      TensorFlow's multi-threaded CPU kernels may still sum in another order on other
      machines (see docs/ARCHITECTURE.md, "Determinism").
    - Resume: after every completed epoch the model with its optimizer state, the best weights
      so far and state.json (history, best validation loss, next epoch's seed) are written
      atomically to `run_dir/models/.train/<run_id>/`. A rerun after Ctrl-C or SIGKILL continues
      after the last completed epoch, and every epoch appears once in the history. A horizon
      whose folder is complete (done.json) is skipped; when all are, nothing is built or
      trained. Wall time counts the completed epochs of earlier sessions too.
    - Validation after each epoch, in inference mode: mean cross-entropy and the summed
      confusion matrix; `val_fg_iou` is the IoU of foreground (every class but
      `background_class`). `collapsed` flags a checkpoint that predicts one class for >= 99.5%
      of validation pixels while the truth is more varied (and prints a red warning).
    - peak_rss_mb is the process's peak resident set (ru_maxrss) when the horizon finished; it
      includes whatever the process did before (e.g. larger models trained earlier).

    Returns one TrainRecord per spec, in the order given.
    """
    stage = TrainStage(Path(run_dir), [specs], train, val, cfg, background_class)
    return run_stage(stage, progress)


@dataclass
class TrainStage(Stage):
    """Training as a stage: a unit per model (one epoch horizon), a group per training run."""

    root: Path
    runs: list[list[ModelSpec]]  # grid_specs
    train: Any
    val: Any
    cfg: Any  # TrainConfig
    background_class: int

    name = "train"
    distributed = True

    def __post_init__(self) -> None:
        for specs in self.runs:
            _check_inputs(specs, self.train, self.val)
        num_classes = self.runs[0][0].num_classes if self.runs else 2
        if not 0 <= self.background_class < num_classes:
            raise ConfigError(
                f"background class {self.background_class} is not one of {num_classes} classes"
            )
        weights = self.cfg.class_weights
        if weights is not None and len(weights) != num_classes:
            raise ConfigError(
                f"train.class_weights has {len(weights)} weights but the dataset has "
                f"{num_classes} classes"
            )

    def units(self) -> list[Unit]:
        folder = RunFolder(self.root)
        units = []
        for specs in self.runs:
            fingerprint = _fingerprint(specs[0], self.cfg, self.train, self.val)
            units += [_unit(folder, spec, fingerprint) for spec in specs]
        for unit in units:
            _refuse_other_settings(unit)
        return units

    def run(self, group: list[Unit], progress: Any = None) -> None:
        pending = [self._spec(unit) for unit in group]
        set_tf_threads(usable_cores())
        run = _Run(
            pending, self.train, self.val, self.cfg, self.root, progress, self.background_class
        )
        run.run(pending)

    def merge(self, units: list[Unit], failures: dict) -> list[TrainRecord]:
        """Every model's record (from its done.json); trained_models_info.csv with the study's
        columns Model, Epoch, Filters, Normalization first."""
        known = TrainRecord.__dataclass_fields__
        records, rows = [], []
        for unit in units:
            done = read_record(unit)
            if done is None:
                raise ConfigError(f"{unit.record.parent} is not finished")
            record = TrainRecord(**{k: v for k, v in done["record"].items() if k in known})
            records.append(record)
            rows.append({**self._spec(unit).identity.study_columns(), **done["record"]})
        fileio.write_csv(RunFolder(self.root).trained_csv, rows)
        return records

    def needs(self, group: list[Unit]) -> list[Path]:
        folder = RunFolder(self.root)
        paths = [folder.model_dir(u.key[0]) for u in group] + [folder.train_state(group[0].group)]
        return [p for p in paths if p.exists()]

    def cpus(self, cluster: Any) -> int:
        return int(cluster.train_cpus)

    def _spec(self, unit: Unit) -> ModelSpec:
        return next(s for specs in self.runs for s in specs if s.model_id == unit.key[0])


# --------------------------------------------------------------------------- the grid


def grid_specs(cfg: Any, num_classes: int) -> list[list[ModelSpec]]:
    """The training runs of a StudyConfig: one list of ModelSpecs (one per epoch horizon) per
    (arch, filters, batchnorm)."""
    t = cfg.train
    horizons = sorted(set(t.epochs))
    return [
        [ModelSpec(arch, f, bn, e, cfg.data.image_size, num_classes) for e in horizons]
        for arch in t.arch
        for f in t.filters
        for bn in t.batchnorm
    ]


def grid_data(cfg: Any, train: Any, val: Any, num_classes, background_class, progress):
    if hasattr(train, "splits"):  # a DatasetIndex: load its train and val splits
        index, size = train, cfg.data.image_size
        if cfg.data.mode == "tile":
            train = load_native(index, "train", progress=progress)
            val_native = load_native(index, "val", progress=progress)
            # tiles without overlap cover every validation pixel at about half the cost
            val = grid_tiles(val_native, size, 0)
        else:
            train = load_split(index, "train", size, progress=progress)
            val = load_split(index, "val", size, progress=progress)
        return train, val, index.num_classes, index.background_class
    if val is None:
        raise ConfigError("train_grid needs a validation split (val is None)")
    if num_classes is None:
        num_classes = max(2, int(max(train.masks.max(), val.masks.max())) + 1)
    if background_class is None:
        background_class = cfg.data.background_class
    if background_class is None:
        pets = cfg.data.format == "pets" and cfg.data.source != "synthetic"
        background_class = 1 if pets else 0
    return train, val, num_classes, background_class


def train_grid(
    cfg: Any,
    train: Any,
    val: Any,
    run_dir: Path,
    progress: Any = None,
    *,
    num_classes: int | None = None,
    background_class: int | None = None,
    runner: Any = None,
) -> list[TrainRecord]:
    """Train every (arch, filters, batchnorm) run of `cfg.train` (`cfg` is a StudyConfig) for its
    epoch horizons into `run_dir/models/` (see train_run), and write
    `run_dir/trained_models_info.csv`: the study's columns Model, Epoch, Filters,
    Normalization, then the TrainRecord fields, one row per model. `runner` runs the training
    runs elsewhere (unetq.cluster); default here, one after another.

    `train`/`val` are SplitArrays at cfg.data.image_size, with `num_classes` and
    `background_class` given (defaults: from the masks; cfg.data.background_class, else pets 1,
    folders 0). Or `train` is a DatasetIndex and `val` None: its splits are loaded and its
    classes used. Models already trained are not trained again.
    """
    train, val, num_classes, background_class = grid_data(
        cfg, train, val, num_classes, background_class, progress
    )
    runs = grid_specs(cfg, num_classes)
    stage = TrainStage(Path(run_dir), runs, train, val, cfg.train, background_class)
    return run_stage(stage, progress, runner)
