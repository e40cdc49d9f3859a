"""The main job end to end on the toy world of `toy_models`.

Its registered classifier's logits are 5 x the mean of each colour channel, which gives a known
answer: a direction that makes the images redder exists, so p(red) must rise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from harness.errors import ConfigError, RegistryError
from toy_models import REPO, register_toy_classifier, run_mlflow_project, write_suite


def version_tags(uri: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("colour", "1").tags)


def test_evaluation_end_to_end(store, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from harness.evaluation import evaluate

    _, uri = store
    result = evaluate("colour@champion", write_suite(tmp_path), tracking_uri=uri, progress=False)

    assert result.model.version == 1
    assert result.gate.verdict == "pass"
    assert result.exit_code == 0
    tags = version_tags(uri)
    assert tags["latentgate.verdict"] == "pass"
    assert tags["latentgate.run_id"] == result.run_id
    assert tags["latentgate.suite"] == "colours"
    assert tags["latentgate.failed"] == ""

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["latentgate.verdict"] == "pass"
    assert run.data.params["model_uri"] == "models:/colour/1"
    assert run.data.metrics["red.target_prob_gain"] >= 0.3
    assert "blue.skin_hue_delta_deg.ci_low" in run.data.metrics

    folder = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, tracking_uri=uri))
    for name in ("red.gif", "red_sheet.png", "red_curves.png", "blue.gif", "report.html", "results.json"):
        assert (folder / name).is_file(), name
    results = json.loads((folder / "results.json").read_text())
    assert results["model"]["version"] == 1
    assert len(results["suite"]["sha256"]) == 64
    assert len(results["classes"]["red"]["per_sample"]["target_prob_gain"]) == 4
    assert results["generator"]["sha256"]

    gif = Image.open(folder / "red.gif")
    assert gif.info["loop"] == 0
    assert gif.info["duration"] == 120
    assert gif.n_frames == 2 * 4 - 2  # forward and back without repeating the ends


def test_unknown_class_leaves_no_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from harness.evaluation import evaluate

    uri = register_toy_classifier(tmp_path)
    suite = write_suite(tmp_path, classes="  purple: {}")
    with pytest.raises(ConfigError, match="'purple'.*classifier's classes are: red, green, blue"):
        evaluate("colour:1", suite, tracking_uri=uri, progress=False)

    assert "latentgate.verdict" not in version_tags(uri)
    assert MlflowClient(tracking_uri=uri).get_experiment_by_name("latentgate") is None


def test_file_store_rejected(tmp_path):
    from harness.evaluation import evaluate

    with pytest.raises(RegistryError, match="is a file store"):
        evaluate("colour:1", write_suite(tmp_path), tracking_uri=str(tmp_path / "mlruns"))


def run_cli(*args: str, uri: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("case", "model", "expected"),
    [
        ("unknown model", "nope:1", "registered model 'nope' not found"),
        ("unknown alias", "colour@staging", "alias 'staging' not found"),
        ("unknown version", "colour:7", "version 7 of registered model 'colour' not found"),
        ("bad reference", "colour", "invalid model reference 'colour'"),
    ],
)
def test_cli_bad_model(store, tmp_path, case, model, expected):
    _, uri = store
    completed = run_cli("run", "--model", model, "--suite", str(write_suite(tmp_path)), uri=uri, cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert expected in completed.stderr
    assert "Traceback" not in completed.stderr


def test_cli_missing_generator(store, tmp_path):
    _, uri = store
    suite = write_suite(tmp_path, generator=tmp_path / "missing.pt")
    completed = run_cli("run", "--model", "colour:1", "--suite", str(suite), uri=uri, cwd=tmp_path)
    assert completed.returncode == 2
    assert "missing.pt" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_cli_malformed_yaml(store, tmp_path):
    _, uri = store
    suite = tmp_path / "broken.yaml"
    suite.write_text("version: 1\nclasses: [unclosed\n")
    completed = run_cli("run", "--model", "colour:1", "--suite", str(suite), uri=uri, cwd=tmp_path)
    assert completed.returncode == 2
    assert "broken.yaml" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_cli_file_store(tmp_path):
    completed = run_cli(
        "run", "--model", "colour:1", "--suite", str(write_suite(tmp_path)), uri=str(tmp_path / "mlruns"), cwd=tmp_path
    )
    assert completed.returncode == 2
    assert "is a file store" in completed.stderr


def test_mlflow_run_local_env(store, tmp_path):
    """`mlflow run . -P model=... --env-manager local` runs the MLproject entry end to end."""
    _, uri = store
    suite = write_suite(tmp_path)
    completed = run_mlflow_project(
        uri,
        [str(REPO), "-P", "model=colour:1", "-P", f"suite={suite}", "--env-manager", "local"],
        cwd=tmp_path,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "verdict: PASS" in completed.stdout
    tags = version_tags(uri)
    assert tags["latentgate.verdict"] == "pass"

    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(tags["latentgate.run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "colour:1"  # the MLproject parameter, same run
    assert run.data.params["model_uri"] == "models:/colour/1"


def test_classifier_loads_from_given_store_only(store, tmp_path, monkeypatch):
    """The version's files come from `tracking_uri`, whatever MLflow's global registry URI is."""
    import mlflow

    from harness.classifier import load_classifier, resolve_model

    _, uri = store
    monkeypatch.chdir(tmp_path)  # MLflow's default store would be ./mlflow.db here
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        classifier = load_classifier(
            resolve_model("colour:1", tracking_uri=uri),
            fallback_preprocessing={"resolution": 16, "mean": [0.5] * 3, "std": [0.5] * 3},
            tracking_uri=uri,
        )
    finally:
        mlflow.set_registry_uri(None)
    assert list(classifier.class_names) == ["red", "green", "blue"]
    assert not (tmp_path / "mlflow.db").exists()
