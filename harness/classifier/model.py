"""Loading a registered classifier as a differentiable torch module.

LatentGate needs gradients through the classifier, so it loads MLflow's pytorch flavour. Models
saved in MLflow's `pt2` format (torch.export, the default of recent MLflow releases) load without
running code from the artifact. Models saved in the `pickle` format run pickled code on load, so
they are loaded only when the caller allows it explicitly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.classifier.registry import ResolvedModel
from harness.errors import RegistryError, ShapeError

log = logging.getLogger(__name__)

# Keys of the MLflow model metadata (`mlflow.pytorch.log_model(..., metadata=...)`) that
# LatentGate reads.
CLASS_NAMES_KEY = "class_names"
PREPROCESSING_KEY = "preprocessing"


@dataclass(frozen=True)
class Preprocessing:
    """Input preprocessing of a classifier: resize RGB images in [0, 1], then (x - mean) / std."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_dict(cls, values: dict, origin: str) -> Preprocessing:
        """Build from a metadata or suite mapping; `origin` names where it came from."""
        try:
            resolution = int(values["resolution"])
            mean = tuple(float(v) for v in values["mean"])
            std = tuple(float(v) for v in values["std"])
        except (KeyError, TypeError, ValueError) as error:
            raise RegistryError(
                f"invalid classifier preprocessing in {origin}: {values!r} ({error}); expected "
                "{resolution: INT, mean: [R, G, B], std: [R, G, B]} for inputs in [0, 1]."
            ) from None
        if resolution <= 0 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise RegistryError(
                f"invalid classifier preprocessing in {origin}: {values!r}; resolution must be "
                "positive, mean and std must have 3 values and std must be positive."
            )
        return cls(resolution, mean, std)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return asdict(self)


class Classifier(torch.nn.Module):
    """A registered classifier that takes generator images and returns class logits.

    `forward` takes RGB images `[N, 3, H, W]` in [-1, 1] (the generator's range), maps them to
    [0, 1], resizes them to the classifier's resolution (bilinear, antialiased) and normalises
    them with the classifier's mean and std. The network's parameters are frozen; gradients flow
    to the input images.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        class_names: Sequence[str],
        preprocessing: Preprocessing,
        model: ResolvedModel | None = None,
    ) -> None:
        super().__init__()
        try:
            network.eval()
        except NotImplementedError:
            # MLflow's pt2 format loads as a torch.export module, which keeps the mode it was
            # exported in and rejects eval().
            pass
        self.network = network
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.class_names = tuple(class_names)
        self.preprocessing = preprocessing
        self.model = model
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> Classifier:
        # The wrapped network stays in evaluation mode: it is only ever used for inference and
        # for gradients with respect to its input. Modules from torch.export reject train/eval.
        self.training = mode
        return self

    def class_index(self, class_name: str) -> int:
        try:
            return self.class_names.index(class_name)
        except ValueError:
            raise RegistryError(
                f"class {class_name!r} is not a class of {self._label()}; its classes: "
                f"{', '.join(self.class_names)}."
            ) from None

    def _label(self) -> str:
        return self.model.uri if self.model is not None else "the classifier"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ShapeError(
                f"classifier input must be [N, 3, H, W] RGB images, got {list(images.shape)}"
            )
        x = (images + 1) / 2
        size = self.preprocessing.resolution
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        x = (x - self.mean) / self.std
        return self.network(x)


def _read_mlmodel(model_dir: Path):
    from mlflow.models import Model

    mlmodel_path = model_dir / "MLmodel"
    if not mlmodel_path.is_file():
        raise RegistryError(f"no MLmodel file in the downloaded model at {model_dir}")
    return Model.load(str(mlmodel_path))


def _load_network(model_dir: Path, label: str, allow_pickle: bool) -> torch.nn.Module:
    import mlflow.pytorch

    mlmodel = _read_mlmodel(model_dir)
    if "pytorch" not in mlmodel.flavors:
        raise RegistryError(
            f"{label} has no pytorch flavour (flavours: {', '.join(sorted(mlmodel.flavors))}); "
            "LatentGate needs gradients through the classifier, so log it with "
            "mlflow.pytorch.log_model."
        )
    data_dir = model_dir / mlmodel.flavors["pytorch"].get("model_data", "data")
    if not (data_dir / "model.pt2").is_file():
        if not allow_pickle:
            raise RegistryError(
                f"{label} is stored in MLflow's pickle format, and loading it would run Python "
                "code stored in the artifact. Re-log it with "
                "mlflow.pytorch.log_model(..., serialization_format='pt2', input_example=...) "
                "or, if you trust the artifact, allow pickled models (suite key "
                "classifier.allow_pickle: true)."
            )
        log.warning("loading %s from a pickle: this runs code stored in the artifact", label)
    return mlflow.pytorch.load_model(str(model_dir), map_location="cpu")


def load_classifier(
    model: ResolvedModel,
    fallback_class_names: Sequence[str] | None = None,
    fallback_preprocessing: dict | None = None,
    allow_pickle: bool = False,
    device: str | torch.device = "cpu",
    tracking_uri: str | None = None,
) -> Classifier:
    """Download and load a resolved model version as a `Classifier`.

    Class names and preprocessing come from the model's MLflow metadata and fall back to the
    suite's values. Raises RegistryError when either is missing from both, or when the
    network's output width differs from the number of class names.
    """
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    label = model.uri
    # MLflow resolves a models:/ URI against its global registry URI, which may name another
    # store than `tracking_uri`. So the version's download URI comes from this store.
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    source = client.get_model_version_download_uri(model.name, str(model.version))
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri))
    metadata = _read_mlmodel(model_dir).metadata or {}
    network = _load_network(model_dir, label, allow_pickle)

    class_names = metadata.get(CLASS_NAMES_KEY)
    if class_names is None:
        class_names = fallback_class_names
    elif fallback_class_names is not None and list(fallback_class_names) != list(class_names):
        log.warning(
            "%s: the suite's classes %s differ from the model metadata's %s; using the metadata",
            label,
            list(fallback_class_names),
            list(class_names),
        )
    if not class_names:
        raise RegistryError(
            f"{label} has no '{CLASS_NAMES_KEY}' in its MLflow metadata and the suite gives no "
            "classifier.classes; add one of them."
        )

    preprocessing_values = metadata.get(PREPROCESSING_KEY)
    origin = f"the metadata of {label}"
    if preprocessing_values is None:
        preprocessing_values, origin = fallback_preprocessing, "the suite (classifier.preprocessing)"
    if preprocessing_values is None:
        raise RegistryError(
            f"{label} has no '{PREPROCESSING_KEY}' in its MLflow metadata and the suite gives no "
            "classifier.preprocessing; add {resolution, mean, std} to one of them."
        )
    preprocessing = Preprocessing.from_dict(preprocessing_values, origin)

    classifier = Classifier(network, class_names, preprocessing, model).to(device)
    _check_output_width(classifier, label)
    return classifier


def _check_output_width(classifier: Classifier, label: str) -> None:
    size = classifier.preprocessing.resolution
    # Two images, not one: torch.export specialises a batch dimension of size 1.
    probe = torch.zeros(2, 3, size, size, device=classifier.mean.device)
    with torch.no_grad():
        logits = classifier(probe)
    num_classes = len(classifier.class_names)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise RegistryError(
            f"{label} returns outputs of shape {list(logits.shape)} for a batch of 2, but it has "
            f"{num_classes} class names ({', '.join(classifier.class_names)}); the output width "
            "must equal the number of classes."
        )
    if not math.isfinite(float(logits.abs().sum())):
        log.warning("%s returns non-finite logits for a blank image", label)
