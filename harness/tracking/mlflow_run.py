"""One MLflow run per evaluation, ended FAILED whenever the evaluation does not finish."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "latentgate"
TAG_VERDICT = "latentgate.verdict"
TAG_RUN_ID = "latentgate.run_id"
TAG_SUITE = "latentgate.suite"
TAG_FAILED = "latentgate.failed"

# MLflow limits a tag value to 8,000 characters (5,000 in older servers); a failed list is cut
# below that with a marker.
_MAX_TAG_CHARS = 4_000


def _truncate(value: str) -> str:
    if len(value) <= _MAX_TAG_CHARS:
        return value
    return value[: _MAX_TAG_CHARS - 20] + " ... (truncated)"


def experiment_name() -> str:
    """Return the experiment evaluations log to: MLFLOW_EXPERIMENT_NAME, else `latentgate`."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT_NAME)


class EvaluationRun:
    """An MLflow run that is ended FAILED unless `finish` is called.

    Inside `mlflow run`, MLflow sets MLFLOW_RUN_ID and this run continues that one, so the
    project run and the evaluation are the same run.
    """

    def __init__(self, tracking_uri: str, run_name: str) -> None:
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        if os.environ.get("MLFLOW_RUN_ID"):
            self.run = mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"])
        else:
            experiment = mlflow.set_experiment(experiment_name())
            self.run = mlflow.start_run(experiment_id=experiment.experiment_id, run_name=run_name)
        self.run_id = self.run.info.run_id
        self._ended = False
        log.info("MLflow run %s started in %s", self.run_id, tracking_uri)

    def log_params(self, params: dict[str, object]) -> None:
        self._mlflow.log_params({key: str(value)[:6000] for key, value in params.items()})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        import math

        finite = {key: value for key, value in metrics.items() if math.isfinite(value)}
        if finite:
            self._mlflow.log_metrics(finite)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags({key: _truncate(str(value)) for key, value in tags.items()})

    def log_artifacts(self, folder: Path) -> None:
        self._mlflow.log_artifacts(str(folder))

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with `status` (FINISHED or FAILED)."""
        if not self._ended:
            self._mlflow.end_run(status=status)
            self._ended = True
            log.info("MLflow run %s ended %s", self.run_id, status)

    def __enter__(self) -> EvaluationRun:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.finish("FAILED" if exc_type is not None else "FINISHED")


def tag_model_version(tracking_uri: str, name: str, version: int, tags: dict[str, str]) -> None:
    """Set tags on a registered model version."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, _truncate(str(value)))
    shown = ", ".join(f"{key}={value!r}" for key, value in tags.items() if key != TAG_FAILED)
    log.info("tagged %s version %s with %s", name, version, shown)
