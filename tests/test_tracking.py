"""`unetq study --mlflow URI`: the runs read back with the MLflow client; logging twice adds
nothing twice."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from runhelp import run_cli
from unetq.runfolder import RunFolder
from unetq.tracking import log_study

pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'unetq[mlflow]')")


def _runs(client, experiment_id: str, role: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`unetq.role` = '{role}'")
    return {r.info.run_name: r for r in runs}


@pytest.mark.slow
def test_a_study_logged_to_mlflow_reads_back_params_histories_metrics_and_artifacts(
    smoke_run, cache_env, tmp_path
):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "smoke"
    shutil.copytree(smoke_run, out)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_cli(["study", "--preset", "smoke", "--out", out, "--mlflow", uri], cache_env)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    assert experiment.artifact_location == (tmp_path / "mlartifacts" / "smoke").as_uri()
    models = _runs(client, experiment.experiment_id, "model")
    assert sorted(models) == RunFolder(out).model_ids()
    study = _runs(client, experiment.experiment_id, "study")["smoke"]
    assert {"config.toml", "model_performance_average_results.csv", "report"} <= {
        a.path for a in client.list_artifacts(study.info.run_id)
    }

    run = models["xception-f4-bn-e3"]
    assert run.data.params["arch"] == "xception"
    assert run.data.params["filters"] == "4"
    assert run.data.params["batchnorm"] == "True"
    assert run.data.params["epochs"] == "3"
    assert run.data.params["data.source"] == "synthetic"
    assert run.data.tags["mlflow.parentRunId"] == study.info.run_id

    history = pd.read_csv(RunFolder(out).history("xception-f4-bn-e3"))
    logged = client.get_metric_history(run.info.run_id, "train.val_fg_iou")
    assert [m.step for m in logged] == history["epoch"].tolist()
    assert [m.value for m in logged] == pytest.approx(history["val_fg_iou"].tolist())

    average = pd.read_csv(RunFolder(out).average_csv)
    int8 = average[(average.model_id == "xception-f4-bn-e3") & (average.variant == "tflite-int8")]
    assert run.data.metrics["tflite-int8.fg_iou"] == pytest.approx(int8["fg_iou"].iloc[0])
    assert run.data.metrics["tflite-int8.size_mb"] == pytest.approx(
        int8["size_bytes"].iloc[0] / 1e6
    )
    assert run.data.metrics["tflite-int8.ms_1t"] > 0

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.keras", "model/tflite-int8.tflite", "model/openvino-int8.xml"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "model/model.keras", str(tmp_path))
    assert Path(local).read_bytes() == RunFolder(out).model_file("xception-f4-bn-e3").read_bytes()

    # Logging the same study again: the same runs, each history once.
    assert log_study(out, uri) == experiment.experiment_id
    again = _runs(client, experiment.experiment_id, "model")
    assert {k: r.info.run_id for k, r in again.items()} == {
        k: r.info.run_id for k, r in models.items()
    }
    assert len(client.get_metric_history(run.info.run_id, "train.val_fg_iou")) == len(history)
