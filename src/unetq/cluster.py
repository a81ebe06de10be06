"""`unetq study --executor ray`: training runs, conversions and evaluations as Ray tasks.

No file system is shared. A task gets the files its unit needs as bytes, works in a scratch run
folder of its own and returns the files it wrote; the driver writes them atomically into the run
folder in the order they were written (so a `done.json` or sidecar still lands last). The study's
own steps then find that work finished, by the same checks that resume an interrupted study, and
only merge the records. A task whose worker is lost runs again (cluster.max_retries); a rerun of
the study skips every unit already written back.

Benchmarks are never tasks among others: the bench step runs after every task has finished, on
the driver's machine while a Ray placeholder holds all of that node's CPUs (so no other Ray work
lands there), or on the node that offers `cluster.bench_resource`, taking all of its CPUs.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from unetq.bench.run import bench_run
from unetq.compress import compress_models, unconverted_models
from unetq.config import StudyConfig
from unetq.errors import UnetqError, first_line, require_extra
from unetq.evaluate import evaluate_parts, load_split_arrays, unevaluated_models
from unetq.fileio import write_bytes
from unetq.runfolder import RunFolder
from unetq.runtimes import THREADS_ENV
from unetq.train import grid_data, grid_specs, train_run, unfinished_runs

EXECUTORS = ("local", "ray")
TASK_NAME = "unetq_unit"  # a busy worker's process title is ray::unetq_unit

Files = dict[str, bytes]  # path relative to the run folder -> content


# --- files in and out of a task ----------------------------------------------------------------


def pack(root: Path, paths: list[Path]) -> Files:
    """The files at or under `paths` (inside root), by path relative to root."""
    files: Files = {}
    for path in paths:
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in found:
            files[file.relative_to(root).as_posix()] = file.read_bytes()
    return files


def unpack(root: Path, files: Files) -> None:
    """Write `files` under root, each atomically, in the order given."""
    for rel, content in files.items():
        write_bytes(root / rel, content)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    stats = {p.relative_to(root).as_posix(): p.stat() for p in root.rglob("*") if p.is_file()}
    return {rel: (st.st_mtime_ns, st.st_size) for rel, st in stats.items()}


def _written_since(root: Path, before: dict[str, tuple[int, int]]) -> Files:
    """Files new or rewritten since `before`, oldest write first."""
    now = _snapshot(root)
    changed = sorted((stamp, rel) for rel, stamp in now.items() if before.get(rel) != stamp)
    return {rel: (root / rel).read_bytes() for _, rel in changed}


def run_unit(work: Callable[..., None], files: Files, threads: int, *args: Any) -> Files:
    """The body of every task: `work(scratch_root, *args)` on a scratch copy of `files`."""
    os.environ[THREADS_ENV] = str(threads)
    with tempfile.TemporaryDirectory(prefix="unetq-unit-") as tmp:
        root = Path(tmp)
        unpack(root, files)
        before = _snapshot(root)
        work(root, *args)
        return _written_since(root, before)


# --- the units ---------------------------------------------------------------------------------


def _train(root: Path, specs, train, val, cfg, background_class: int) -> None:
    train_run(specs, train, val, cfg, root, background_class=background_class)


def _compress(root: Path, model_id: str, variants, calibration, verify, cfg, validation) -> None:
    path = RunFolder(root).model_file(model_id)
    compress_models([path], variants, calibration, verify, cfg, None, 1, validation)


def _evaluate(root: Path, index, split: str, cfg, arrays) -> None:
    run = RunFolder(root)
    evaluate_parts(run, run, index, split, cfg, arrays=arrays)


def _bench(root: Path, cfg) -> None:
    bench_run(root, cfg)


# --- the driver --------------------------------------------------------------------------------


def import_ray():
    return require_extra("ray", "ray", "--executor ray")


class RayExecutor:
    """Sends a study's units to a Ray cluster and writes what they return into the run folder."""

    def __init__(self, address: str | None, cfg: StudyConfig, console: Any):
        self.ray = import_ray()
        self.address, self.cfg, self.console = address, cfg, console
        self.started_here = False

    def __enter__(self) -> RayExecutor:
        ray = self.ray
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local Ray instance"
                hint = ""
                if self.address and os.environ.get("RAY_AUTH_MODE") != "token":
                    hint = " (a cluster with token authentication needs RAY_AUTH_MODE=token here)"
                raise UnetqError(f"cannot start Ray at {where}: {first_line(exc)}{hint}") from None
            self.started_here = True
        for sig, handler in handlers.items():  # Ctrl-C stays unetq's to handle
            signal.signal(sig, handler)
        self.task = ray.remote(run_unit)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.console.print(f"ray: {len(ray.nodes())} node(s), {cpus} CPUs", highlight=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started_here:
            self.ray.shutdown()

    # --- the study's units
    def train(
        self, train, val, run_dir: Path, progress, num_classes=None, background_class=None
    ) -> None:
        """Every unfinished training run (one per arch x filters x batch norm) as a task."""
        train, val, num_classes, background_class = grid_data(
            self.cfg, train, val, num_classes, background_class, progress
        )
        runs = unfinished_runs(grid_specs(self.cfg, num_classes), run_dir)
        if not runs:
            return
        run = RunFolder(run_dir)
        train_ref, val_ref = self.ray.put(train), self.ray.put(val)
        cpus = self.cfg.cluster.train_cpus
        units = {}
        for specs in runs:
            paths = [run.model_dir(s.model_id) for s in specs] + [run.train_state(specs[0].run_id)]
            files = pack(run.root, [p for p in paths if p.exists()])
            args = (
                _train,
                files,
                cpus,
                specs,
                train_ref,
                val_ref,
                self.cfg.train,
                background_class,
            )
            units[f"train {specs[0].run_id}"] = (args, {"num_cpus": cpus})
        self._run(units, run_dir, progress)

    def compress(self, run_dir: Path, calibration, verify, validation, progress) -> None:
        """Each model with a variant still to convert as a task."""
        run = RunFolder(run_dir)
        variants = self.cfg.compress.variants
        models = [run.model_file(m) for m in run.model_ids()]
        todo = unconverted_models(models, variants)
        if not todo:
            return
        calibration, verify, validation = map(self.ray.put, (calibration, verify, validation))
        cpus = self.cfg.cluster.task_cpus
        units = {}
        for path in todo:
            model_id = path.parent.name
            args = (_compress, pack(run.root, [path.parent]), cpus, model_id, variants)
            args += (calibration, verify, self.cfg.compress, validation)
            units[f"compress {model_id}"] = (args, {"num_cpus": cpus})
        self._run(units, run_dir, progress)

    def evaluate(self, run_dir: Path, index, split: str, progress) -> None:
        """Each model with a variant still to evaluate as a task (its variants in one)."""
        run = RunFolder(run_dir)
        if not run.model_ids():
            return
        arrays = load_split_arrays(index, split, self.cfg.data, progress)
        todo = unevaluated_models(run, arrays, self.cfg)
        if not todo:
            return
        arrays = self.ray.put(arrays)
        cpus = self.cfg.cluster.task_cpus
        units = {}
        for model_id in todo:
            folders = [run.model_dir(model_id), run.eval_part(model_id, "keras").parent]
            files = pack(run.root, [p for p in folders if p.exists()])
            args = (_evaluate, files, cpus, index, split, self.cfg, arrays)
            units[f"evaluate {model_id}"] = (args, {"num_cpus": cpus})
        self._run(units, run_dir, progress)

    @contextmanager
    def bench_machine(self, run_dir: Path, progress) -> Iterator[bool]:
        """Around the bench step: yields True when the benchmark is to run here (the driver's
        node held for it), False when it ran on the node with cluster.bench_resource."""
        resource = self.cfg.cluster.bench_resource
        if resource is None:
            with self._hold_driver_node():
                yield True
            return
        node = self._node_with(resource)
        run = RunFolder(run_dir)
        paths = [run.config] + [run.model_dir(m) for m in run.model_ids()]
        paths += [p.parent for p in run.bench_parts()]
        files = pack(run.root, sorted(set(paths)))
        cpus = int(node["Resources"]["CPU"])
        options = {"num_cpus": cpus, "resources": {resource: 1}}
        label = f"bench on {node['NodeManagerAddress']}"
        units = {label: ((_bench, files, cpus, self.cfg), options)}
        self._run(units, run_dir, progress)
        yield False

    def _node_with(self, resource: str) -> dict:
        nodes = [n for n in self.ray.nodes() if n["Alive"] and n["Resources"].get(resource)]
        if not nodes:
            raise UnetqError(
                f"no live Ray node offers the resource '{resource}' (cluster.bench_resource); "
                f"start the bench machine with: ray start --resources '{{\"{resource}\": 1}}'"
            )
        return nodes[0]

    @contextmanager
    def _hold_driver_node(self) -> Iterator[None]:
        """Hold every CPU of the driver's node in Ray, so no task runs there while it benches."""
        ray = self.ray
        here = ray.get_runtime_context().get_node_id()
        node = next((n for n in ray.nodes() if n["Alive"] and n["NodeID"] == here), None)
        if node is None:  # the driver is not a node of the cluster: Ray runs nothing here
            yield
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        holder = ray.remote(_Holder).options(
            num_cpus=node["Resources"].get("CPU", 0),
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        )
        actor = holder.remote()
        try:
            ray.get(actor.ready.remote())  # waits until every task on this node has ended
            yield
        finally:
            ray.kill(actor)

    # --- running a batch of units
    def _run(self, units: dict[str, tuple[tuple, dict]], run_dir: Path, progress) -> None:
        """Submit every unit (label -> run_unit's arguments, Ray options), write each one's
        files as it finishes; an error ends the study."""
        ray = self.ray
        retries = self.cfg.cluster.max_retries
        refs = {}
        for label, (args, options) in units.items():
            task = self.task.options(name=TASK_NAME, max_retries=retries, **options)
            refs[task.remote(*args)] = label
        bar = progress.add_task(f"ray: {next(iter(units))}", total=len(refs)) if progress else None
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                for ref in done:
                    unpack(run_dir, self._result(ref, refs[ref]))
                    if bar is not None:
                        progress.update(bar, description=f"ray: {refs[ref]} done")
                        progress.advance(bar)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if bar is not None:
                progress.remove_task(bar)
        kind = next(iter(units)).split()[0]
        self.console.print(f"ray: {len(refs)} {kind} task(s) done, written into {run_dir}")

    def _result(self, ref, label: str) -> Files:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, UnetqError):
                raise cause from None
            raise UnetqError(f"{label} failed on a Ray worker: {first_line(cause)}") from None
        except exceptions.RayError as exc:  # worker or node lost more often than retried
            tries = self.cfg.cluster.max_retries + 1
            raise UnetqError(
                f"{label}: the Ray worker was lost {tries} time(s) ({type(exc).__name__}); "
                "rerun the same command to resume"
            ) from None


class _Holder:
    """An actor that only holds CPUs."""

    def ready(self) -> bool:
        return True


def check_executor(name: str, address: str | None) -> None:
    """One line, before anything is written, for an executor that cannot run here."""
    if name not in EXECUTORS:
        raise UnetqError(f"unknown executor '{name}' (choose from {', '.join(EXECUTORS)})")
    if name == "local" and address:
        raise UnetqError("--ray-address needs --executor ray")
    if name == "ray":
        import_ray()


def open_executor(name: str, address: str | None, cfg: StudyConfig, console: Any):
    """The executor a study runs with, as a context manager: None for local (the steps do all
    the work themselves), else a RayExecutor connected for the study's duration."""
    check_executor(name, address)
    return RayExecutor(address, cfg, console) if name == "ray" else nullcontext()
