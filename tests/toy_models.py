"""The toy world the evaluation and plugin tests share: a registered classifier and a suite.

The classifier's logits are 5 x the mean of each colour channel (classes red, green, blue), so
the results are known: a direction that makes the images redder exists, so p(red) must rise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


def run_mlflow_project(
    tracking_uri: str, arguments: list[str], cwd: Path, timeout: int
) -> subprocess.CompletedProcess:
    """Run `mlflow run ARGUMENTS` with this interpreter's `mlflow` and return the result."""
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=tracking_uri,
        # The MLproject command calls `python`, so this interpreter's folder goes first.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    mlflow_command = shutil.which("mlflow", path=env["PATH"])
    assert mlflow_command is not None
    return subprocess.run(
        [mlflow_command, "run", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

SUITE = """\
version: 1
name: colours
generator: {generator}
identity: {identity}
classifier:
  preprocessing: {{resolution: 16, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}}
regions:
  face_crop: [0.0, 0.0, 1.0, 1.0]
  skin: [0.25, 0.25, 0.75, 0.75]
search:
  num_samples: 4
  seed: 0
  truncation_psi: 0.7
  steps: 12
  learning_rate: 0.05
  lambda_id: 0.1
  lambda_l2: 0.001
  layers: all
  alpha_max: 1.0
  num_frames: 4
  bootstrap: {{num_resamples: 200, confidence: 0.95, seed: 0}}
defaults:
  expect:
    - target_prob_gain >= 0.3
classes:
{classes}
"""


class ChannelMeans(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 5


def write_suite(folder: Path, classes: str = "  red: {}\n  blue: {}", **paths) -> Path:
    values = {
        "generator": FIXTURES / "rosinality_s32_convert.pt",
        "identity": FIXTURES / "arcface_tiny.onnx",
        "classes": classes,
    }
    values.update(paths)
    path = folder / "suite.yaml"
    path.write_text(SUITE.format(**values))
    return path


def register_toy_classifier(folder: Path) -> str:
    """Create a sqlite registry in `folder` with model `colour` version 1, alias `champion`.

    Returns the registry's URI.
    """
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # earlier tests in this process may have set another one
    mlflow.set_experiment("toy-models")
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            ChannelMeans(),
            name="classifier",
            input_example=np.zeros((2, 3, 16, 16), np.float32),
            registered_model_name="colour",
            metadata={"class_names": ["red", "green", "blue"]},
        )
    mlflow.MlflowClient().set_registered_model_alias("colour", "champion", "1")
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    return uri
