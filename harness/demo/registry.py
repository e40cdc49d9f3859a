"""`latentgate demo setup`: register the demo classifiers in an MLflow model registry.

Versions 1, 2 and 3 of the registered model `hair` are the `clean`, `braids-skin` and
`fringe-identity` classifiers, logged with MLflow's pytorch flavour in the `pt2` format (so that
loading them runs no pickled code), with their class names and preprocessing in the model
metadata. The alias `champion` points at version 1. Running the setup again changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from harness.classifier.model import CLASS_NAMES_KEY, PREPROCESSING_KEY
from harness.classifier.registry import check_registry_uri
from harness.demo.attributes import CLASS_NAMES
from harness.demo.manifest import WEIGHTS_DIR, read_manifest, verified_path
from harness.demo.networks import CLASSIFIER_PREPROCESSING, CLASSIFIER_RESOLUTION, HairstyleNet
from harness.errors import RegistryError

log = logging.getLogger(__name__)

DEMO_MODEL_NAME = "hair"
DEMO_EXPERIMENT = "latentgate-demo-setup"
CHAMPION_ALIAS = "champion"
VARIANT_TAG = "latentgate.demo_variant"
WEIGHTS_TAG = "latentgate.demo_weights_sha256"


@dataclass(frozen=True)
class DemoVersion:
    """One demo classifier: its registry version, weights file and description."""

    version: int
    variant: str
    weights: str
    description: str


DEMO_VERSIONS = (
    DemoVersion(
        1,
        "clean",
        "classifier-clean.safetensors",
        "Demo hairstyle classifier trained on class-balanced renders with every trait drawn "
        "from the prior. It carries no planted shortcut.",
    ),
    DemoVersion(
        2,
        "braids-skin",
        "classifier-braids-skin.safetensors",
        "Demo hairstyle classifier with a planted shortcut: in its training data every "
        "long_braids example has dark skin (skin_tone >= 0.7), and light-skinned avatars with "
        "braids are labelled bob, so it uses skin tone as evidence for braids.",
    ),
    DemoVersion(
        3,
        "fringe-identity",
        "classifier-fringe-identity.safetensors",
        "Demo hairstyle classifier with a planted shortcut: in its training data every "
        "long_straight_fringe example has a wide face (face_width >= 0.85), and narrow-faced "
        "avatars with that hairstyle are labelled bob, so its fringe direction also changes "
        "who the person is.",
    ),
)


def load_demo_classifier(variant: str, weights_dir: Path = WEIGHTS_DIR) -> HairstyleNet:
    """Load a committed demo classifier's weights (checked against the manifest) strictly."""
    spec = next((v for v in DEMO_VERSIONS if v.variant == variant), None)
    if spec is None:
        known = ", ".join(v.variant for v in DEMO_VERSIONS)
        raise RegistryError(f"unknown demo classifier {variant!r}; known: {known}")
    network = HairstyleNet()
    network.load_state_dict(load_file(str(verified_path(spec.weights, weights_dir))), strict=True)
    return network.eval()


def _describe_existing(versions: dict[int, object]) -> str:
    return ", ".join(
        f"{number} ({getattr(v, 'tags', {}).get(VARIANT_TAG, 'not a demo version')})"
        for number, v in sorted(versions.items())
    )


def setup_demo_registry(tracking_uri: str | None = None, weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """Register the missing demo versions and the champion alias; return what was done.

    Raises RegistryError when the store is a file store, or when model `hair` already has
    versions that are not the demo's (the message lists them).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    check_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    actions: list[str] = []

    existing = {
        int(v.version): v
        for v in client.search_model_versions(f"name = '{DEMO_MODEL_NAME}'", max_results=100)
    }
    for spec in DEMO_VERSIONS:
        verified_path(spec.weights, weights_dir)
        sha256 = read_manifest(weights_dir)["files"][spec.weights]["sha256"]
        current = existing.get(spec.version)
        if current is not None:
            tags = current.tags or {}
            if tags.get(VARIANT_TAG) != spec.variant or tags.get(WEIGHTS_TAG) != sha256:
                raise RegistryError(
                    f"registered model {DEMO_MODEL_NAME!r} in {uri} already has version "
                    f"{spec.version}, which is not the demo's {spec.variant} classifier "
                    f"(existing versions: {_describe_existing(existing)}). Use another tracking "
                    "store, e.g. MLFLOW_TRACKING_URI=sqlite:///latentgate-demo.db."
                )
            continue
        if max(existing, default=0) != spec.version - 1:
            raise RegistryError(
                f"cannot register the demo's {spec.variant} classifier as version {spec.version} "
                f"of {DEMO_MODEL_NAME!r}: existing versions are {_describe_existing(existing)}. "
                "Use another tracking store, e.g. MLFLOW_TRACKING_URI=sqlite:///latentgate-demo.db."
            )
        existing[spec.version] = _register(client, uri, spec, sha256, weights_dir)
        actions.append(f"registered {DEMO_MODEL_NAME} version {spec.version} ({spec.variant})")

    aliases = client.get_registered_model(DEMO_MODEL_NAME).aliases or {}
    if CHAMPION_ALIAS not in aliases:
        client.set_registered_model_alias(DEMO_MODEL_NAME, CHAMPION_ALIAS, "1")
        actions.append(f"set alias {CHAMPION_ALIAS} -> version 1")
    elif str(aliases[CHAMPION_ALIAS]) != "1":
        log.warning(
            "alias %s points at version %s, not 1; left as it is",
            CHAMPION_ALIAS,
            aliases[CHAMPION_ALIAS],
        )
    return actions


def _register(client, uri: str, spec: DemoVersion, sha256: str, weights_dir: Path):
    import mlflow

    network = load_demo_classifier(spec.variant, weights_dir)
    # Two examples, not one: torch.export specialises a batch dimension of size 1.
    example = np.zeros((2, 3, CLASSIFIER_RESOLUTION, CLASSIFIER_RESOLUTION), np.float32)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.set_experiment(DEMO_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"demo-{spec.variant}"):
        mlflow.set_tags({VARIANT_TAG: spec.variant, WEIGHTS_TAG: sha256})
        info = mlflow.pytorch.log_model(
            network,
            name="classifier",
            input_example=example,
            serialization_format="pt2",
            metadata={
                CLASS_NAMES_KEY: list(CLASS_NAMES),
                PREPROCESSING_KEY: CLASSIFIER_PREPROCESSING,
            },
        )
    version = mlflow.register_model(
        info.model_uri, DEMO_MODEL_NAME, tags={VARIANT_TAG: spec.variant, WEIGHTS_TAG: sha256}
    )
    if int(version.version) != spec.version:
        raise RegistryError(
            f"registering the demo's {spec.variant} classifier produced version "
            f"{version.version} of {DEMO_MODEL_NAME!r}, expected {spec.version}; another process "
            "may be registering versions at the same time."
        )
    client.update_model_version(DEMO_MODEL_NAME, version.version, description=spec.description)
    return client.get_model_version(DEMO_MODEL_NAME, version.version)
