"""`unetq study --dry-run`: the units of work a config implies and what they would cost here.

Training dominates a study. Its cost is estimated from multiply-adds: a short probe times a few
training steps of the grid's smallest model on this machine (seconds per GMAC of a training
step, forward + backward taken as 3x the forward multiply-adds), and every training run is
scaled by its own multiply-adds, images per epoch and epochs. The other steps are counted, not
timed. A run's units are independent, so W workers take about max(longest run, total / W).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from unetq.config import StudyConfig
from unetq.data import open_dataset
from unetq.models import build_model, count_macs
from unetq.runtimes import set_tf_threads, usable_cores
from unetq.variants import VARIANTS

# The full Oxford-IIIT Pet: image files in images.tar.gz (the seed split cuts at 80% / 90%).
FULL_PETS_IMAGES = 7390
PROBE_STEPS = 3  # timed steps at most; fewer once PROBE_SECONDS have passed (slow machines)
PROBE_SECONDS = 5.0
PROBE_BATCH = 32  # the seed preset's batch; larger batches would make the probe slow
TRAIN_MACS_FACTOR = 3  # a training step: forward, and a backward pass of about twice its cost


@dataclass
class TrainingUnit:
    run_id: str
    filters: int
    gmacs: float  # forward multiply-adds per image (per tile in tile mode), billions
    epochs: int
    images_per_epoch: int
    seconds: float  # estimated on this machine


@dataclass
class Plan:
    dataset: str  # where the image counts come from
    train_images: int
    val_images: int
    test_images: int
    training: list[TrainingUnit]
    models: int
    conversions: int
    evaluations: int
    measurements: int
    robustness_jobs: int
    seconds_per_train_gmac: float
    probe_seconds: float

    @property
    def training_seconds(self) -> float:
        return sum(u.seconds for u in self.training)

    def makespan(self, workers: int) -> float:
        """Wall time of the training runs on `workers` equal workers (longest run first)."""
        loads = [0.0] * workers
        for unit in sorted(self.training, key=lambda u: -u.seconds):
            loads[loads.index(min(loads))] += unit.seconds
        return max(loads)


def split_counts(cfg: StudyConfig) -> tuple[str, int, int, int, int]:
    """(source, train, val, test image counts, classes): the dataset if it is on this machine
    (never downloaded for a dry run), else the full Oxford-IIIT Pet by the seed split's cut."""
    index = open_dataset(cfg.data, download=False)
    if index is not None:
        counts = [len(index.splits[s]) for s in ("train", "val", "test")]
        return str(index.note or index.root), *counts, index.num_classes
    n = FULL_PETS_IMAGES
    train, val = int(0.8 * n), int(0.9 * n) - int(0.8 * n)
    source = f"the full Oxford-IIIT Pet ({n} images; not on this machine)"
    return source, train, val, n - train - val, 3


def probe_seconds_per_gmac(cfg: StudyConfig, num_classes: int) -> tuple[float, float]:
    """Seconds per GMAC of a training step of the grid's smallest model, measured here over a
    few steps (batch at most PROBE_BATCH, after one untimed step; one step once PROBE_SECONDS
    have passed); and the probe's wall time.
    Small batches use the cores less well than the study's, so the estimate errs long."""
    import keras

    started = time.perf_counter()
    set_tf_threads(usable_cores())
    t = cfg.train
    size = cfg.data.image_size
    model = build_model(t.arch[0], min(t.filters), t.batchnorm[0], num_classes, size)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    batch = min(t.batch_size, PROBE_BATCH)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    y = rng.integers(0, num_classes, (batch, size, size))
    model.train_on_batch(x, y)
    timed = time.perf_counter()
    steps, elapsed = 0, 0.0
    while steps < PROBE_STEPS and (steps == 0 or elapsed < PROBE_SECONDS):
        model.train_on_batch(x, y)
        steps, elapsed = steps + 1, time.perf_counter() - timed
    per_step = elapsed / steps
    gmacs = TRAIN_MACS_FACTOR * batch * count_macs(model) / 1e9
    keras.backend.clear_session()
    return per_step / gmacs, time.perf_counter() - started


def model_gmacs(cfg: StudyConfig, num_classes: int) -> dict[tuple[str, int, bool], float]:
    """Forward GMAC per image of every (arch, filters, batchnorm) run of the grid."""
    import keras

    t, size = cfg.train, cfg.data.image_size
    out = {}
    for arch in t.arch:
        for filters in t.filters:
            for bn in t.batchnorm:
                model = build_model(arch, filters, bn, num_classes, size)
                out[arch, filters, bn] = count_macs(model) / 1e9
                keras.backend.clear_session()
    return out


def make_plan(cfg: StudyConfig) -> Plan:
    source, n_train, n_val, n_test, num_classes = split_counts(cfg)
    per_gmac, probe_s = probe_seconds_per_gmac(cfg, num_classes)
    t = cfg.train
    tiles = t.tiles_per_image if cfg.data.mode == "tile" else 1
    epochs = max(t.epochs)
    units = []
    for (arch, filters, bn), gmacs in model_gmacs(cfg, num_classes).items():
        images = n_train * tiles
        train_s = TRAIN_MACS_FACTOR * gmacs * images * epochs * per_gmac
        validate_s = gmacs * n_val * epochs * per_gmac  # one forward pass a validation image
        run_id = f"{arch}-f{filters}-{'bn' if bn else 'nobn'}"
        units.append(TrainingUnit(run_id, filters, gmacs, epochs, images, train_s + validate_s))
    models = len(units) * len(set(t.epochs))
    variants = [v for v in cfg.compress.variants if v in VARIANTS]
    threads = len(cfg.bench.threads)
    rob = cfg.robustness
    jobs = (1 + len(rob.conditions) * len(set(rob.severities))) if rob.enabled else 0
    return Plan(
        dataset=source,
        train_images=n_train,
        val_images=n_val,
        test_images=n_test,
        training=units,
        models=models,
        conversions=models * (len(variants) - ("keras" in variants)),
        evaluations=models * len(variants),
        measurements=models * len(variants) * threads,  # each variant runs on one runtime
        robustness_jobs=jobs,
        seconds_per_train_gmac=per_gmac,
        probe_seconds=probe_s,
    )


def hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_lines(plan: Plan, cores: int) -> list[str]:
    """What `unetq study --dry-run` prints after its table of training runs."""
    total = plan.training_seconds
    workers = sorted({1, 4, 16, len(plan.training)})
    spans = ", ".join(f"{w} worker(s) {hours(plan.makespan(w))}" for w in workers)
    longest = max((u.seconds for u in plan.training), default=0.0)
    return [
        f"data: {plan.dataset}: {plan.train_images} train, {plan.val_images} validation, "
        f"{plan.test_images} test images",
        f"training: {len(plan.training)} runs -> {plan.models} models, about {hours(total)} on "
        f"this machine ({cores} cores; {math.ceil(total / 3600 * cores)} CPU-hours)",
        f"training wall time with W workers like this machine: {spans} (the longest run alone "
        f"takes {hours(longest)})",
        f"then {plan.conversions} conversions, {plan.evaluations} evaluations of "
        f"{plan.test_images} test images, {plan.measurements} latency measurements and "
        f"{plan.robustness_jobs} robustness jobs (counted, not timed)",
        f"estimate from the models' multiply-adds and a {plan.probe_seconds:.0f} s probe of "
        f"training steps here: {plan.seconds_per_train_gmac * 1e3:.2f} ms per GMAC",
    ]
