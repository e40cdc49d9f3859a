"""Helpers for the automatic-gate tests: toy model versions, gate files, signed deliveries.

Two toy classifiers on the toy world of `toy_models`: `good` (logits 5 x the channel means)
passes the toy suite's `target_prob_gain >= 0.3`, `bad` (0.05 x) cannot raise p(red) by more
than a few hundredths, so it fails. They are saved once per test session and registered into
each test's own sqlite store by path, which takes milliseconds instead of a log_model call.
Deliveries are signed with MLflow's own signing function, so the receiver is checked against
what MLflow sends.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SECRET = "gate-test-secret-0123456789abcdef"
CLASS_NAMES = ["red", "green", "blue"]
SCALES = {"good": 5.0, "bad": 0.05}

_saved_models: dict[str, str] = {}


class ScaledChannelMeans(torch.nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * self.scale


def saved_toy_models(tmp_path_factory) -> dict[str, str]:
    """Return the folders of the `good` and `bad` MLflow models, saving them on first use.

    Naming the pip requirements skips MLflow's requirement inference, which loads the model in
    a subprocess and takes most of the time of a save.
    """
    import mlflow

    if _saved_models:
        return _saved_models
    folder = tmp_path_factory.mktemp("toy-models")
    for kind, scale in SCALES.items():
        path = folder / kind
        mlflow.pytorch.save_model(
            ScaledChannelMeans(scale),
            str(path),
            input_example=np.zeros((2, 3, 16, 16), np.float32),
            metadata={"class_names": CLASS_NAMES},
            pip_requirements=["torch"],
        )
        _saved_models[kind] = str(path)
    return _saved_models


def write_gate_suite(folder: Path) -> Path:
    """Write the toy suite, cut to one class and a short search so a job takes seconds.

    `good` still passes it and `bad` still fails it: p(red) rises by about 0.5 and 0.01.
    """
    from toy_models import write_suite

    path = write_suite(folder, classes="  red: {}")
    text = path.read_text()
    for old, new in (("num_samples: 4", "num_samples: 2"), ("steps: 12", "steps: 6"),
                     ("num_frames: 4", "num_frames: 3"), ("num_resamples: 200", "num_resamples: 50")):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def make_registry(folder: Path, sources: list[str], model: str = "colour") -> str:
    """Create a sqlite store in `folder` with `model` versions 1, 2, ... from `sources`.

    The `latentgate` experiment is created with its artifacts under `folder`, so evaluations
    write nothing into the working folder. Returns the store's URI.
    """
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_experiment("latentgate", artifact_location=str(folder / "artifacts"))
    client.create_registered_model(model)
    for source in sources:
        client.create_model_version(model, source=source)
    return uri


def write_gate_file(
    folder: Path,
    tracking_uri: str,
    suite: Path,
    triggers: str,
    protected: str = "[champion]",
    receiver: str = "{host: 127.0.0.1, port: 0, path: /webhook}",
    model: str = "colour",
) -> Path:
    """Write gate.yaml for `model` with the given triggers block (YAML flow mapping)."""
    path = folder / "gate.yaml"
    path.write_text(
        f"version: 1\n"
        f"tracking_uri: {tracking_uri}\n"
        f"queue: {folder / 'queue.db'}\n"
        f"receiver: {receiver}\n"
        f"models:\n"
        f"  {model}:\n"
        f"    suite: {suite}\n"
        f"    triggers: {triggers}\n"
        f"    protected_aliases: {protected}\n"
    )
    return path


def cli_env(**overrides: str) -> dict[str, str]:
    """Return the environment for a `latentgate` subprocess that runs this working tree.

    PYTHONPATH names the repository, because an editable install made before `registry_hooks`
    existed does not map that package.
    """
    env = {**os.environ, "LATENTGATE_WEBHOOK_SECRET": SECRET, **overrides}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def webhook_body(event: str, data: dict) -> bytes:
    """Return a delivery body in the form MLflow's `_send_webhook_request` builds."""
    entity, action = event.split(".")
    payload = {
        "entity": entity,
        "action": action,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "data": data,
    }
    return json.dumps(payload).encode("utf-8")


def signed_headers(
    body: bytes,
    secret: str = SECRET,
    delivery_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Return MLflow's delivery headers for `body`, signed by MLflow's own function."""
    import time

    from mlflow.webhooks.delivery import _generate_hmac_signature

    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, stamp, body.decode()),
    }


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """POST `body` and return the HTTP status and the JSON response."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def version_tags(uri: str, version: str, model: str = "colour") -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return dict(client.get_model_version(model, version).tags)


def aliases(uri: str, model: str = "colour") -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {alias: str(v) for alias, v in client.get_registered_model(model).aliases.items()}
