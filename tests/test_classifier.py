"""Model references, registry resolution and classifier loading against a real MLflow store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.classifier import (
    Classifier,
    ModelReference,
    check_registry_uri,
    load_classifier,
    parse_model_reference,
    resolve_model,
)
from harness.errors import RegistryError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hair:2", ModelReference("hair", version=2)),
        ("hair@champion", ModelReference("hair", alias="champion")),
        ("models:/hair/2", ModelReference("hair", version=2)),
        ("models:/hair@champion", ModelReference("hair", alias="champion")),
        ("  hair:12 ", ModelReference("hair", version=12)),
        ("models:/team/hair/3", ModelReference("team/hair", version=3)),
    ],
)
def test_parse_reference_valid(text, expected):
    assert parse_model_reference(text) == expected


@pytest.mark.parametrize("text", ["hair", "hair:", "hair:two", ":2", "hair@", "models:/hair"])
def test_parse_reference_invalid(text):
    with pytest.raises(RegistryError, match="invalid model reference .* expected NAME:VERSION"):
        parse_model_reference(text)


def test_parse_reference_stage_hint():
    with pytest.raises(RegistryError, match="Stage names .* are not supported"):
        parse_model_reference("models:/hair/Production")


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns", "/abs/mlruns", "C:\\mlruns"])
def test_file_store_rejected(uri):
    with pytest.raises(RegistryError, match="is a file store.*sqlite:///mlflow.db"):
        check_registry_uri(uri)


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "http://127.0.0.1:5000"])
def test_database_and_server_accepted(uri):
    check_registry_uri(uri)


class ChannelMeans(torch.nn.Module):
    """Returns the mean of each input channel, so its logits reveal the preprocessing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class FourOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 2)[:, :4]


PREPROCESSING = {"resolution": 16, "mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 1.0]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A sqlite store with model `probe`: v1 (metadata), v2 (none), v3 (wrong width), v4 (pickle)."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("probe")
    example = np.zeros((2, 3, 16, 16), np.float32)
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            ChannelMeans(),
            name="v1",
            input_example=example,
            registered_model_name="probe",
            metadata={"class_names": ["red", "green", "blue"], "preprocessing": PREPROCESSING},
        )
        mlflow.pytorch.log_model(
            ChannelMeans(), name="v2", input_example=example, registered_model_name="probe"
        )
        mlflow.pytorch.log_model(
            FourOutputs(),
            name="v3",
            input_example=example,
            registered_model_name="probe",
            metadata={"class_names": ["red", "green", "blue"], "preprocessing": PREPROCESSING},
        )
        mlflow.pytorch.log_model(
            ChannelMeans(),
            name="v4",
            input_example=example,
            registered_model_name="probe",
            serialization_format="pickle",
            metadata={"class_names": ["red", "green", "blue"], "preprocessing": PREPROCESSING},
        )
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("probe", "champion", "1")
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.mark.parametrize("text", ["probe:1", "probe@champion", "models:/probe@champion"])
def test_resolve_version_and_alias(registry, text):
    resolved = resolve_model(text, tracking_uri=registry)
    assert resolved.version == 1
    assert resolved.uri == "models:/probe/1"
    assert resolved.reference == text


def test_resolve_records_alias(registry):
    assert resolve_model("probe@champion", tracking_uri=registry).alias == "champion"
    assert resolve_model("probe:2", tracking_uri=registry).alias is None


def test_unknown_model_lists_models(registry):
    with pytest.raises(RegistryError, match="'nope' not found.*registered models: probe"):
        resolve_model("nope:1", tracking_uri=registry)


def test_unknown_version_lists_versions(registry):
    with pytest.raises(RegistryError, match="version 9 .* existing versions: 1, 2, 3, 4"):
        resolve_model("probe:9", tracking_uri=registry)


def test_unknown_alias_lists_aliases(registry):
    with pytest.raises(RegistryError, match="alias 'staging' not found.*champion -> 1"):
        resolve_model("probe@staging", tracking_uri=registry)


def test_classifier_preprocessing_known_answer(registry):
    classifier = load_classifier(resolve_model("probe:1", tracking_uri=registry))
    assert classifier.class_names == ("red", "green", "blue")
    # A constant image of value v in [-1, 1] is (v + 1) / 2 in [0, 1]; normalised per channel.
    values = torch.tensor([-1.0, 0.0, 0.6])
    images = values.view(1, 3, 1, 1).expand(2, 3, 32, 32).clone()
    expected = ((values + 1) / 2 - torch.tensor([0.25, 0.5, 0.75])) / torch.tensor([0.5, 0.25, 1.0])
    logits = classifier(images)
    assert torch.allclose(logits, expected.expand(2, 3), atol=1e-5)


def test_classifier_gradient_reaches_input(registry):
    classifier = load_classifier(resolve_model("probe:1", tracking_uri=registry))
    images = torch.rand(3, 3, 16, 16, requires_grad=True)
    classifier(images)[:, classifier.class_index("blue")].sum().backward()
    assert images.grad is not None
    assert float(images.grad[:, 2].abs().sum()) > 0
    assert not any(p.requires_grad for p in classifier.parameters())


def test_missing_metadata_needs_suite_values(registry):
    resolved = resolve_model("probe:2", tracking_uri=registry)
    with pytest.raises(RegistryError, match="no 'class_names' in its MLflow metadata"):
        load_classifier(resolved)
    classifier = load_classifier(
        resolved, fallback_class_names=["r", "g", "b"], fallback_preprocessing=PREPROCESSING
    )
    assert isinstance(classifier, Classifier)
    assert classifier.class_names == ("r", "g", "b")


def test_output_width_mismatch(registry):
    with pytest.raises(RegistryError, match=r"shape \[2, 4\].*3 class names"):
        load_classifier(resolve_model("probe:3", tracking_uri=registry))


def test_pickle_format_needs_permission(registry):
    resolved = resolve_model("probe:4", tracking_uri=registry)
    with pytest.raises(RegistryError, match="pickle format.*classifier.allow_pickle"):
        load_classifier(resolved)
    assert load_classifier(resolved, allow_pickle=True).class_names == ("red", "green", "blue")


def test_unknown_class_lists_classes(registry):
    classifier = load_classifier(resolve_model("probe:1", tracking_uri=registry))
    with pytest.raises(RegistryError, match="'purple' is not a class.*red, green, blue"):
        classifier.class_index("purple")
