"""`latentgate demo setup` on weights built in the test: versions, alias, idempotence, conflicts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.demo.manifest import record_file
from harness.demo.networks import HairstyleNet
from harness.demo.registry import DEMO_VERSIONS, VARIANT_TAG, setup_demo_registry
from harness.errors import RegistryError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Randomly initialised demo classifiers with a manifest, one per registry version."""
    folder = tmp_path_factory.mktemp("weights")
    for index, spec in enumerate(DEMO_VERSIONS):
        torch.manual_seed(index)
        state = HairstyleNet().state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / spec.weights))
        record_file(spec.weights, "latentgate demo train classifiers --seed 0", 0, None, folder)
    return folder


def test_setup_registers_versions_once(weights, tmp_path):
    from mlflow.tracking import MlflowClient

    from harness.classifier import load_classifier, resolve_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    actions = setup_demo_registry(uri, weights)
    assert actions == [
        "registered hair version 1 (clean)",
        "registered hair version 2 (braids-skin)",
        "registered hair version 3 (fringe-identity)",
        "set alias champion -> version 1",
    ]
    assert setup_demo_registry(uri, weights) == []

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert {k: int(v) for k, v in client.get_registered_model("hair").aliases.items()} == {"champion": 1}
    for spec in DEMO_VERSIONS:
        version = client.get_model_version("hair", str(spec.version))
        assert version.tags[VARIANT_TAG] == spec.variant
        assert version.description == spec.description

    classifier = load_classifier(resolve_model("hair@champion", tracking_uri=uri), tracking_uri=uri)
    assert classifier.class_names[4] == "long_braids"
    assert classifier.preprocessing.resolution == 64


def test_setup_rejects_foreign_versions(weights, tmp_path):
    import mlflow
    import numpy as np

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        experiment = mlflow.set_experiment("foreign-models")
        with mlflow.start_run(experiment_id=experiment.experiment_id):
            mlflow.pytorch.log_model(
                HairstyleNet().eval(),
                name="other",
                input_example=np.zeros((2, 3, 64, 64), np.float32),
                registered_model_name="hair",
            )
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    with pytest.raises(RegistryError, match="already has version 1, which is not the demo's clean"):
        setup_demo_registry(uri, weights)


def test_setup_command_rejects_file_store(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "harness.cli", "demo", "setup", "--tracking-uri", str(tmp_path / "mlruns")],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert "is a file store" in completed.stderr
    assert "Traceback" not in completed.stderr
