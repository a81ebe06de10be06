"""`unetq study --executor ray`: training runs, conversions and evaluations as Ray tasks.

`RayExecutor` is a runner of stages (unetq.work): each group of units of a distributed stage
(one training run, one model's conversions, one model's evaluation) becomes a task. No file
system is shared. A task gets the files its group needs as bytes (`Stage.needs`), runs the group
in a scratch copy of the run folder and returns the files it wrote; the driver writes them
atomically into the run folder in the order they were written (so each unit's record still
lands last) and the stage merges as it does on one machine. A task whose worker is lost runs
again (cluster.max_retries); a rerun of the study skips every unit already written back.

Benchmarks are never tasks among others: the bench step runs after every task has finished, on
the driver's machine while a Ray placeholder holds all of that node's CPUs (so no other Ray work
lands there), or on the node that offers `cluster.bench_resource`, taking all of its CPUs.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from unetq.bench.run import bench_run
from unetq.config import StudyConfig
from unetq.errors import UnetqError, first_line, require_extra
from unetq.fileio import write_bytes
from unetq.runfolder import RunFolder
from unetq.runtimes import THREADS_ENV
from unetq.work import Failures, Stage, Unit, local_runner, run_group

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


def run_unit(work: Callable[..., Any], files: Files, threads: int, *args: Any) -> tuple[Files, Any]:
    """The body of every task: `work(scratch_root, *args)` on a scratch copy of `files`; the
    files it wrote and what it returned."""
    os.environ[THREADS_ENV] = str(threads)
    with tempfile.TemporaryDirectory(prefix="unetq-unit-") as tmp:
        root = Path(tmp)
        unpack(root, files)
        before = _snapshot(root)
        result = work(root, *args)
        return _written_since(root, before), result


# --- the work of a task ------------------------------------------------------------------------


def _run_group(root: Path, stage: Stage, group: list[Unit]) -> Failures:
    """One group of a stage's units (as the driver listed them) in the scratch copy of the run
    folder at `root`."""
    here = stage.moved_to(root)
    return run_group(here, [unit.moved(stage.root, root) for unit in group])


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
            wait_for_head(self.address, self.cfg.cluster.connect_timeout_s)
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

    # --- a runner of stages (unetq.work): each group of a distributed stage as a task
    def __call__(self, stage: Stage, groups: list[list[Unit]], progress: Any):
        if not stage.distributed:
            yield from local_runner(stage, groups, progress)
            return
        cpus = stage.cpus(self.cfg.cluster)
        stage_ref = self.ray.put(stage)  # its arrays are sent once, not once per task
        units = {}
        for group in groups:
            files = pack(stage.root, stage.needs(group))
            args = (_run_group, files, cpus, stage_ref, group)
            label = f"{stage.name} {group[0].group or group[0].label}"
            units[label] = (args, {"num_cpus": cpus}, group)
        for group, (files, failures) in self._run(units):
            unpack(stage.root, files)
            yield group, failures
        self.console.print(
            f"ray: {len(units)} {stage.name} task(s) done, written into {stage.root}"
        )

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
        units = {label: ((_bench, files, cpus, self.cfg), options, None)}
        for _, (written, _) in self._run(units):
            unpack(run_dir, written)
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

    # --- running a batch of tasks
    def _run(self, units: dict[str, tuple[tuple, dict, Any]]):
        """Submit every task (label -> run_unit's arguments, Ray options, what it stands for);
        yield (what it stands for, its result) as each one finishes; an error ends the study."""
        ray = self.ray
        retries = self.cfg.cluster.max_retries
        refs = {}
        for label, (args, options, what) in units.items():
            task = self.task.options(name=TASK_NAME, max_retries=retries, **options)
            refs[task.remote(*args)] = (label, what)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                for ref in done:
                    label, what = refs[ref]
                    yield what, self._result(ref, label)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _result(self, ref, label: str) -> tuple[Files, Any]:
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


def check_executor(name: str, address: str | None, timeout: float | None = None) -> None:
    """One line, before anything is written, for an executor that cannot run here; with a
    `timeout`, a head address whose port does not answer too (nothing else loads before it)."""
    if name not in EXECUTORS:
        raise UnetqError(f"unknown executor '{name}' (choose from {', '.join(EXECUTORS)})")
    if name == "local" and address:
        raise UnetqError("--ray-address needs --executor ray")
    if name == "ray":
        import_ray()
        if timeout is not None and address not in (None, "auto") and "://" not in address:
            _wait_for_port(address, address, timeout)


def wait_for_head(address: str | None, timeout: float) -> None:
    """ray.init for the driver, or one line (UnetqError) within about `timeout` seconds.

    Without an address Ray starts a local instance, unless it finds one to join (RAY_ADDRESS, the
    last `ray start` on this machine); 'auto' must find one. The head to join must first accept a
    TCP connection on its GCS port within the timeout; Ray's handshake then gets the rest of it,
    in one attempt (Ray's own retries last minutes, on a closed port as on one that is not Ray's).
    A failed connection starts no process: a driver that joins a cluster starts none."""
    ray = import_ray()
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    options["configure_logging"] = False
    deadline = time.monotonic() + timeout
    try:
        head = _head_address(address)
    except (ConnectionError, ValueError) as exc:
        if address == "auto":
            raise UnetqError(
                "--ray-address auto: no running Ray cluster found on this machine "
                "(start one with `ray start --head`, or give the head's HOST:PORT)"
            ) from None
        raise UnetqError(f"cannot connect to Ray at {address}: {first_line(exc)}") from None
    if head is None:  # a new local instance: its processes are this study's own
        try:
            ray.init(address=address, **options)
        except (OSError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            raise UnetqError(f"cannot start a local Ray instance: {first_line(exc)}") from None
        return
    where = address if address not in (None, "auto") else f"{head} (found by Ray)"
    _wait_for_port(head, where, timeout)
    hint = ""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        hint = " (a cluster with token authentication needs RAY_AUTH_MODE=token here)"
    started = time.monotonic()
    try:
        with _ray_connect_limits(deadline - started) as wait, _stderr_aside() as said:
            ray.init(address=address, **options)
    except ConnectionError as exc:  # Ray's "Failed to connect to Ray cluster at ...": why?
        if time.monotonic() - started < wait:  # not a wait that ran out
            raise UnetqError(f"cannot connect to Ray at {where}: {first_line(exc)}{hint}") from None
        raise UnetqError(
            f"cannot connect to Ray at {where}: the port accepts connections but no Ray head "
            f"answered within {timeout:g} s (cluster.connect_timeout_s)"
        ) from None
    except (OSError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        raise UnetqError(f"cannot connect to Ray at {where}: {first_line(exc)}{hint}") from None
    sys.stderr.write(said.getvalue())  # connected: what Ray said is not hidden


def _head_address(address: str | None) -> str | None:
    """host:port of the cluster ray.init(address) joins, None when it starts a local one (Ray's
    own resolution: RAY_ADDRESS, the last `ray start` here, any running GCS for 'auto')."""
    from ray._private.services import canonicalize_bootstrap_address

    env = os.environ.get("RAY_ADDRESS")
    target = env if env and address in (None, "auto") else address
    if target and "://" in target:  # Ray Client (ray://host:port): that port answers
        return target.split("://", 1)[1].rstrip("/")
    return canonicalize_bootstrap_address(address)


def _wait_for_port(head: str, where: str, timeout: float) -> None:
    host, _, port = head.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except TimeoutError:
        raise UnetqError(
            f"cannot reach the Ray head at {where}: no answer within {timeout:g} s "
            "(cluster.connect_timeout_s)"
        ) from None
    except ConnectionRefusedError:
        raise UnetqError(
            f"cannot reach the Ray head at {where}: connection refused "
            "(nothing listens there; is `ray start --head` running, on that port?)"
        ) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or first_line(exc)
        raise UnetqError(f"cannot reach the Ray head at {where}: {reason}") from None


@contextmanager
def _ray_connect_limits(seconds: float) -> Iterator[int]:
    """Ray's GCS connection settings for one ray.init: one attempt, whose three waits (the GCS
    channel, its pubsub channel, the cluster id) fit in `seconds`; yields one wait's seconds.
    Ray reads them from the environment, again on Config.initialize (as it does itself when it
    turns token authentication on)."""
    step = max(1, int((seconds - 1) // 3))  # (Ray sleeps 1 s after a failed attempt)
    limits = {
        "RAY_gcs_rpc_server_connect_timeout_s": str(step),
        "RAY_py_gcs_connect_timeout_s": str(step),
        "RAY_gcs_server_port_wait_time_s": "1",  # attempts, one a second
    }
    saved = {name: os.environ.get(name) for name in limits}
    os.environ.update(limits)
    try:
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):  # another Ray: its defaults, within the TCP check
        pass
    try:
        yield step
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _stderr_aside() -> Iterator[Any]:
    """File descriptor 2 into a buffer: Ray's C++ client logs each failed wait there, and a
    failure is to be one line. Yields an object whose getvalue() is what was written."""
    import io

    sys.stderr.flush()
    saved = os.dup(2)
    said = io.StringIO()
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            said.write(tmp.read().decode(errors="replace"))


def open_executor(name: str, address: str | None, cfg: StudyConfig, console: Any):
    """The executor a study runs with, as a context manager: None for local (the steps do all
    the work themselves), else a RayExecutor connected for the study's duration."""
    check_executor(name, address)
    return RayExecutor(address, cfg, console) if name == "ray" else nullcontext()
