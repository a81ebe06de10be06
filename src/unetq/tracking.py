"""`unetq study --mlflow URI`: the finished study logged to MLflow, read from its run folder.

The run folder stays the source of truth; this is a copy for teams that browse MLflow. One
MLflow experiment per run folder (named after it), one parent run for the study (config,
machine, CSVs and report as artifacts) and one nested run per trained model: params (arch,
filters, batch norm, epochs, data and training settings), the per-epoch history as metric
histories, each variant's accuracy, latency, memory and size as `<variant>.<metric>` metrics, and
the model's folder (model.keras and every variant artifact) as artifacts. Logging again after a
rerun adds only what changed, so an extended study updates its runs instead of duplicating them.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from unetq.errors import UnetqError, first_line, require_extra
from unetq.records import ModelId
from unetq.report.tables import main_table
from unetq.runfolder import RunFolder, read_csv

ROLE_TAG, FOLDER_TAG, MODEL_TAG = "unetq.role", "unetq.run_folder", "unetq.model_id"
ARTIFACTS_TAG = "unetq.artifacts"  # names and sizes of the files last logged as artifacts
VARIANT_METRICS = ("size_mb", "fg_iou", "fg_dice", "miou", "agreement", "model_mem_mb")
SETTINGS = {
    "data": ("source", "format", "mode", "image_size", "tile_overlap", "split", "limit"),
    "train": ("batch_size", "optimizer", "learning_rate", "lr_schedule", "loss", "seed"),
}


def check_tracking(uri: str) -> None:
    """Fail early, in one line, when MLflow is not installed or the URI is not one it takes."""
    require_extra("mlflow", "mlflow", "--mlflow")
    _client(uri)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as exc:  # MLflow raises several types for a URI it cannot use
        raise UnetqError(f"--mlflow {uri}: {first_line(exc)}") from None


def log_study(run_dir: Path, uri: str, progress: Any = None) -> str:
    """Log the study in run_dir to the MLflow tracking server `uri`; return the experiment id."""
    from mlflow.exceptions import MlflowException

    try:
        return _Logger(_client(uri), uri, RunFolder(run_dir)).log(progress)
    except MlflowException as exc:
        raise UnetqError(f"--mlflow {uri}: {first_line(exc)}") from None


class _Logger:
    def __init__(self, client, uri: str, run: RunFolder):
        self.client, self.uri, self.run = client, uri, run
        self.folder = str(run.root.resolve())
        self.cfg = run.load_config()

    def log(self, progress: Any) -> str:
        experiment = self.experiment()
        parent = self.find_or_create(experiment, {ROLE_TAG: "study"}, self.run.root.name)
        self.log_artifacts(parent, self.study_files(), "")
        models = self.run.model_ids()
        task = progress.add_task("mlflow", total=len(models)) if progress is not None else None
        variants = self.variant_metrics()
        for model_id in models:
            tags = {ROLE_TAG: "model", MODEL_TAG: model_id, "mlflow.parentRunId": parent}
            run_id = self.find_or_create(experiment, tags, model_id)
            self.log_params(run_id, self.params(model_id))
            self.log_history(run_id, model_id)
            self.log_metrics(run_id, variants.get(model_id, {}))
            self.log_artifacts(run_id, [self.run.model_dir(model_id)], "model")
            self.client.set_terminated(run_id)
            if task is not None:
                progress.advance(task)
        self.client.set_terminated(parent)
        if task is not None:
            progress.remove_task(task)
        return experiment

    def experiment(self) -> str:
        name = self.run.root.name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # beside the database, not in the working dir
            db = Path(self.uri.removeprefix("sqlite:///"))
            location = (db.parent / "mlartifacts" / name).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def find_or_create(self, experiment: str, tags: dict[str, str], name: str) -> str:
        """The run of this folder with these tags, created if it does not exist yet."""
        tags = {**tags, FOLDER_TAG: self.folder}
        where = " and ".join(
            f"tags.`{k}` = '{_quoted(v)}'" for k, v in tags.items() if k.startswith("unetq.")
        )
        found = self.client.search_runs([experiment], filter_string=where, max_results=1)
        if found:
            return found[0].info.run_id
        return self.client.create_run(experiment, run_name=name, tags=tags).info.run_id

    # --- what is logged
    def params(self, model_id: str) -> dict[str, Any]:
        ident = ModelId.parse(model_id)
        params: dict[str, Any] = {}
        if ident is not None:
            params = {
                "arch": ident.arch,
                "filters": ident.filters,
                "batchnorm": ident.batchnorm,
                "epochs": ident.epochs,
            }
        for section, keys in SETTINGS.items():
            values = getattr(self.cfg, section)
            params.update({f"{section}.{k}": getattr(values, k) for k in keys})
        return params

    def variant_metrics(self) -> dict[str, dict[str, float]]:
        """Per model: `<variant>.<metric>` (`<variant>@<runtime>.<metric>` where the runtime is
        not the variant's own) for accuracy, size, memory and latency at each thread count."""
        table = main_table(read_csv(self.run.average_csv))
        columns = [c for c in table.columns if c in VARIANT_METRICS or c.startswith("ms_")]
        out: dict[str, dict[str, float]] = {}
        for row in table.to_dict("records"):
            key = row["variant"]
            if row["runtime"] != _own_runtime(key):
                key = f"{key}@{row['runtime']}"
            out.setdefault(row["model"], {}).update({f"{key}.{c}": row[c] for c in columns})
        return out

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        logged = self.client.get_run(run_id).data.params
        new = {k: str(v) for k, v in params.items() if k not in logged}
        if new:
            from mlflow.entities import Param

            self.client.log_batch(run_id, params=[Param(k, v) for k, v in new.items()])

    def log_history(self, run_id: str, model_id: str) -> None:
        """Per-epoch training metrics, once (a run that has them keeps them)."""
        history = read_csv(self.run.history(model_id))
        if history.empty or self.client.get_run(run_id).data.metrics.get("epoch_count"):
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numeric = [
            c for c in history.columns if c != "epoch" and pd.api.types.is_numeric_dtype(history[c])
        ]
        metrics = [
            Metric(f"train.{c}", float(row[c]), now, int(row["epoch"]))
            for row in history.to_dict("records")
            for c in numeric
            if _finite(row[c])
        ]
        metrics.append(Metric("epoch_count", float(len(history)), now, 0))
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 per batch
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])

    def log_metrics(self, run_id: str, values: dict[str, float]) -> None:
        """Only the values that are new or changed since the last logging."""
        logged = self.client.get_run(run_id).data.metrics
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        changed = [
            Metric(k, float(v), now, 0)
            for k, v in values.items()
            if _finite(v) and logged.get(k) != float(v)
        ]
        if changed:
            self.client.log_batch(run_id, metrics=changed)

    def study_files(self) -> list[Path]:
        run = self.run
        files = [run.config, run.dataset, run.machine, run.trained_csv, run.compressed_csv]
        files += [run.individual_csv, run.average_csv, run.robustness_csv, run.report_dir]
        return [f for f in files if f.exists()]

    def log_artifacts(self, run_id: str, paths: list[Path], under: str) -> None:
        """Upload `paths` (files or folders) unless exactly these files were uploaded last."""
        listing = sorted(
            (f.relative_to(self.run.root).as_posix(), f.stat().st_size)
            for p in paths
            for f in ([p] if p.is_file() else p.rglob("*"))
            if f.is_file()
        )
        digest = hashlib.sha256(repr(listing).encode()).hexdigest()[:16]
        if self.client.get_run(run_id).data.tags.get(ARTIFACTS_TAG) == digest:
            return
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), under or path.name)
            else:
                self.client.log_artifact(run_id, str(path), under or None)
        self.client.set_tag(run_id, ARTIFACTS_TAG, digest)


def _own_runtime(variant: str) -> str:
    from unetq.variants import VARIANTS

    found = VARIANTS.get(variant)
    return found.runtime if found is not None else variant


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
