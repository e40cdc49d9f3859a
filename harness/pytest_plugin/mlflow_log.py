"""One MLflow run per pytest session (`--latentgate-mlflow`): measurements, outcomes and GIFs.

The run goes to the experiment MLFLOW_EXPERIMENT_NAME names, else `latentgate`, in the same
store as the registry. It contains

- params: LatentGate and pytest versions, the device, the models and suites measured;
- metrics: `MODEL.vVERSION.SUITE.CLASS.METRIC` with `.ci_low` and `.ci_high`, plus the counts
  `tests_passed`, `tests_failed`, `tests_error` and `tests_skipped` of the tests that used
  LatentGate;
- artifacts: `pytest_results.json` (every test outcome and measurement) and each class's GIF
  under `gifs/`.

Unlike `latentgate run`, it writes no verdict tags onto model versions: a pytest session runs
whatever subset of checks it selected.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from harness import __version__
from harness.pytest_plugin.disk_cache import measurement_to_json
from harness.pytest_plugin.session import safe_name

if TYPE_CHECKING:
    from harness.pytest_plugin.session import ProbeResult, ProbeSession

# Limits of MLflow 3.17 (mlflow/utils/validation.py): at most 1000 metrics in one log_batch
# request, and at most 6000 characters in a param value.
_METRICS_PER_BATCH = 1000
_MAX_PARAM_CHARS = 6000
# MLflow metric names may contain letters, digits, `_`, `-`, `.`, spaces and `/` (plus `:` except
# on Windows). `/` and `:` are replaced too, so a model name cannot add path segments.
_METRIC_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. ]")


def log_session_run(
    session: ProbeSession, outcomes: Mapping[str, str], exit_status: int, pytest_version: str
) -> str:
    """Log the session's measurements and the outcomes of its LatentGate tests; return the run ID.

    `outcomes` maps a test's node ID to passed, failed, error or skipped. The run ends FAILED if
    logging stops half way, else FINISHED, whatever the tests' outcomes.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from harness.tracking import EXPERIMENT_NAME

    uri = session.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT_NAME)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    )
    results = list(session.results.values())
    run = client.create_run(
        experiment_id, run_name="pytest", tags={"latentgate.source": "pytest"}
    )
    run_id = run.info.run_id
    try:
        timestamp = int(time.time() * 1000)
        params = {
            "latentgate_version": __version__,
            "pytest_version": pytest_version,
            "device": session.device,
            "models": ", ".join(sorted({result.model.uri for result in results})),
            "suites": ", ".join(
                sorted({f"{r.suite.path} (sha256 {r.suite.sha256})" for r in results})
            ),
        }
        counts = Counter(outcomes.values())
        metrics = {f"tests_{outcome}": float(counts[outcome]) for outcome in _OUTCOMES}
        for result in results:
            metrics.update(_measurement_metrics(result))
        client.log_batch(
            run_id,
            params=[Param(key, value[:_MAX_PARAM_CHARS]) for key, value in params.items()],
            tags=[RunTag("latentgate.pytest.exit_status", str(exit_status))],
        )
        entries = [Metric(key, value, timestamp, 0) for key, value in metrics.items()]
        for start in range(0, len(entries), _METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=entries[start : start + _METRICS_PER_BATCH])
        _log_artifacts(client, run_id, results, outcomes, exit_status, pytest_version)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


_OUTCOMES = ("passed", "failed", "error", "skipped")


def _measurement_metrics(result: ProbeResult) -> dict[str, float]:
    prefix = f"{result.model.name}.v{result.model.version}.{result.suite.name}.{result.class_name}"
    metrics: dict[str, float] = {}
    for metric, measurement in result.measurements.items():
        name = _METRIC_NAME_UNSAFE.sub("_", f"{prefix}.{metric}")
        for suffix, value in (
            ("", measurement.mean),
            (".ci_low", measurement.ci_low),
            (".ci_high", measurement.ci_high),
        ):
            if math.isfinite(value):
                metrics[name + suffix] = value
    return metrics


def _log_artifacts(client, run_id, results, outcomes, exit_status, pytest_version) -> None:
    with tempfile.TemporaryDirectory(prefix="latentgate-pytest-run-") as folder:
        staged = Path(folder)
        measured = []
        for result in results:
            gif = None
            if result.gif is not None and result.gif.is_file():
                # Cached GIFs are named by their cache key; the run names them by class.
                gif = (
                    f"gifs/{safe_name(result.model.name)}-v{result.model.version}/"
                    f"{safe_name(result.suite.name)}/{safe_name(result.class_name)}.gif"
                )
                (staged / gif).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(result.gif, staged / gif)
            measured.append(
                {
                    "model": result.model.uri,
                    "suite": str(result.suite.path),
                    "suite_sha256": result.suite.sha256,
                    "class": result.class_name,
                    "status": result.status,
                    "message": result.message,
                    "source": result.source,
                    "gif": gif,
                    "measurements": {
                        metric: measurement_to_json(measurement)
                        for metric, measurement in result.measurements.items()
                    },
                }
            )
        summary = {
            "latentgate_version": __version__,
            "pytest_version": pytest_version,
            "exit_status": exit_status,
            "tests": [
                {"nodeid": nodeid, "outcome": outcome} for nodeid, outcome in outcomes.items()
            ],
            "classes": measured,
        }
        (staged / "pytest_results.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
        client.log_artifacts(run_id, str(staged))
