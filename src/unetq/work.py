"""Finished work: is a unit done, what is left, and the one loop every stage runs.

A stage (train, compress, evaluate, bench, robustness) cuts its work into units: one model's
training horizon, one variant of a model, one measurement, one image condition. A unit is done
when its record, a JSON file in the run folder written atomically after everything the unit
made, says it was computed from the inputs the unit would be computed from now (content digests
of the files it read, and the settings that change its result) and the files it made are still
there at the sizes it recorded. Nothing depends on file times, so a run folder copied with
`cp -r` or moved to another machine reruns nothing, and a unit interrupted before its record
was written is redone from its start (or from its own checkpoint).

`run_stage` is the loop: list the units, keep those not done, run them group by group (units of
one group share work, e.g. one model's variants share its export), collect failures, merge.
Where a group runs is a runner's business: in this process, in worker processes, or on a Ray
cluster (unetq.cluster), which gets the files a group needs and returns what it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unetq.errors import UnetqError
from unetq.fileio import write_json

Key = tuple[Any, ...]
Failures = dict[Key, str]  # unit key -> one-line reason


def canonical(value: Any) -> Any:
    """`value` as it reads back from JSON (lists, str keys), so a record compares equal."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class Unit:
    """One piece of a stage's work and where its record lies."""

    key: Key  # unique within the stage, e.g. (model_id, variant)
    record: Path  # JSON, written last
    inputs: dict[str, Any]  # what the result is computed from: digests and settings
    outputs: tuple[Path, ...] = ()  # files the unit makes besides its record
    group: str = ""  # units of one group run together

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", canonical(self.inputs))

    @property
    def label(self) -> str:
        return " ".join(str(k) for k in self.key)

    def moved(self, old: Path, new: Path) -> Unit:
        """The same unit in a copy of the run folder: `old` -> `new` (inputs unchanged)."""

        def move(path: Path) -> Path:
            return Path(new) / Path(path).relative_to(old)

        outputs = tuple(move(p) for p in self.outputs)
        return dataclasses.replace(self, record=move(self.record), outputs=outputs)


def read_record(unit: Unit) -> dict[str, Any] | None:
    """The unit's record if the unit is done (same inputs, outputs intact), else None."""
    try:
        record = json.loads(unit.record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("inputs") != unit.inputs:
        return None
    sizes = record.get("outputs", {})
    for path in unit.outputs:
        size = sizes.get(path.name)
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return None
    return record


def is_done(unit: Unit) -> bool:
    return read_record(unit) is not None


def left(units: list[Unit]) -> list[Unit]:
    """The units not done."""
    return [u for u in units if not is_done(u)]


def write_record(unit: Unit, **payload: Any) -> None:
    """Mark `unit` done: its inputs, the sizes of its outputs and `payload`, written last."""
    outputs = {p.name: p.stat().st_size for p in unit.outputs}
    write_json(unit.record, {"inputs": unit.inputs, "outputs": outputs, **payload})


def groups_of(units: list[Unit]) -> list[list[Unit]]:
    """Units by group, groups in the order they first appear."""
    groups: dict[str, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.group or unit.label, []).append(unit)
    return list(groups.values())


class Stage:
    """What a stage says about itself; `run_stage` does the rest.

    A stage is picklable: worker processes and Ray tasks get a copy and run `run(group)` on it,
    after `moved_to` when they work in a folder of their own.
    """

    name = "stage"
    tolerant = False  # a failed group is recorded and the others go on (else the error ends it)
    workers = 1  # local worker processes for its groups
    distributed = False  # its groups may run as Ray tasks
    worker_start: Callable[[], None] | None = None  # run first in each worker process

    def units(self) -> list[Unit]:
        raise NotImplementedError

    def run(self, group: list[Unit], progress: Any = None) -> Failures | None:
        """Compute the units of one group, writing each one's record last."""
        raise NotImplementedError

    def merge(self, units: list[Unit], failures: Failures) -> Any:
        """Join the records of every unit (done now, or failed) into the stage's results."""
        return None

    def prepare(self, todo: list[Unit]) -> None:
        """Before any group runs (called also when nothing is left to do)."""

    def close(self) -> None:
        """After the last group: free what runs kept (loaded models)."""

    # --- for runners that work elsewhere (a stage keeps its run folder in `root`)
    def needs(self, group: list[Unit]) -> list[Path]:
        """Files and folders (in the run folder) a worker elsewhere needs for `group`."""
        return []

    def moved_to(self, root: Path) -> Stage:
        """The same stage working in another copy of the run folder."""
        return dataclasses.replace(self, root=Path(root))

    def cpus(self, cluster: Any) -> int:
        return int(cluster.task_cpus)


Runner = Callable[[Stage, list[list[Unit]], Any], Iterator[tuple[list[Unit], Failures]]]


def run_stage(
    stage: Stage, progress: Any = None, runner: Runner | None = None, redo: bool = False
) -> Any:
    """List, skip, run, merge: the loop of every stage. `redo` runs every unit again.

    Returns what the stage's merge returns. A failed group of a tolerant stage is passed to
    merge as failures; any other error ends the stage (finished units keep their records).
    """
    units = stage.units()
    todo = list(units) if redo else left(units)
    failures: Failures = {}
    task = None
    if progress is not None and units:
        task = progress.add_task(stage.name, total=len(units), completed=len(units) - len(todo))
    try:
        stage.prepare(todo)
        run = runner or local_runner
        for group, failed in run(stage, groups_of(todo), progress):
            failures.update(failed)
            if task is not None:
                progress.update(task, description=f"{stage.name} {group[0].group or ''}".strip())
                progress.advance(task, len(group))
    finally:
        stage.close()
        if task is not None:
            progress.remove_task(task)
    say_reused(progress, stage.name, len(todo), len(units))
    return stage.merge(units, failures)


def run_group(stage: Stage, group: list[Unit], progress: Any = None) -> Failures:
    """One group in this process; a tolerant stage's error fails the group's units."""
    try:
        return dict(stage.run(group, progress) or {})
    except UnetqError as exc:
        if not stage.tolerant:
            raise
        return {u.key: str(exc) for u in group}


def local_runner(stage: Stage, groups: list[list[Unit]], progress: Any):
    """Groups in this process, or `stage.workers` worker processes at a time."""
    if stage.workers > 1 and len(groups) > 1:
        yield from _pool_runner(stage, groups)
        return
    for group in groups:
        yield group, run_group(stage, group, progress)


def _pool_runner(stage: Stage, groups: list[list[Unit]]):
    """Each group in a spawned worker (TensorFlow is not fork-safe), results as they finish."""
    context = multiprocessing.get_context("spawn")
    workers = min(stage.workers, len(groups))
    pool = context.Pool(workers, initializer=_worker_start, initargs=(stage.worker_start,))
    try:
        pending = [(group, pool.apply_async(run_group, (stage, group))) for group in groups]
        while pending:
            done = [(g, job) for g, job in pending if job.ready()]
            if not done:
                time.sleep(0.05)
            for group, job in done:
                pending.remove((group, job))
                yield group, job.get()
        pool.close()
    finally:
        pool.terminate()  # Ctrl-C or a failed group: running work stops now
        pool.join()


def _worker_start(then: Callable[[], None] | None) -> None:
    """A worker process: Ctrl-C is the parent's to handle (it terminates the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if then is not None:
        then()


def say_reused(progress: Any, step: str, computed: int, total: int) -> None:
    """One line on what a step found finished on disk (content-checked) and what it redid."""
    if progress is None:
        return
    if computed == 0:
        text = f"{step}: nothing to redo ({total} results up to date)"
    else:
        text = f"{step}: {computed} of {total} computed, {total - computed} up to date"
    progress.console.print(text, highlight=False)
