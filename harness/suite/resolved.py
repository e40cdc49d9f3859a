"""A suite after loading: defaults merged, paths resolved, the region preset expanded.

`Suite` is what the pipeline reads. `Suite.to_dict()` is the JSON form saved in `results.json`
and logged to MLflow, so a run records every setting it used, including the defaults the file
left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError
from harness.suite.expectations import Expectation
from harness.suite.regions import Box


@dataclass(frozen=True)
class Preprocessing:
    """Classifier input preprocessing: frames in [0, 1], resized, then `(x - mean) / std`."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Regions:
    preset: str | None  # None: both boxes were given in the file
    face_crop: Box
    skin: Box


@dataclass(frozen=True)
class BootstrapSettings:
    num_resamples: int
    confidence: float
    seed: int


@dataclass(frozen=True)
class SearchSettings:
    num_samples: int
    seed: int
    truncation_psi: float
    steps: int
    learning_rate: float
    lambda_id: float
    lambda_l2: float
    layers: tuple[int, ...] | None  # W+ indices the direction may change; None: all of them
    alpha_max: float
    num_frames: int
    bootstrap: BootstrapSettings

    @property
    def alphas(self) -> tuple[float, ...]:
        """The `num_frames` evenly spaced steps from 0 to `alpha_max`, both included."""
        last = self.num_frames - 1
        return tuple(self.alpha_max * i / last for i in range(self.num_frames))


@dataclass(frozen=True)
class Suite:
    """A validated suite file with every default filled in."""

    path: Path
    sha256: str  # of the file's bytes
    name: str
    description: str | None
    version: int
    generator: Path
    identity: Path
    classifier_classes: tuple[str, ...] | None  # used when the model's metadata has no names
    preprocessing: Preprocessing | None  # used when the model's metadata has none
    regions: Regions
    search: SearchSettings
    expectations: dict[str, tuple[Expectation, ...]]  # class name -> bounds, in file order
    allow_pickle: bool = False  # whether pickle-format MLflow models may be loaded
    class_lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    layers_line: int | None = field(default=None, repr=False, compare=False)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.expectations)

    def check_classes(self, class_names: list[str] | tuple[str, ...]) -> None:
        """Raise ConfigError if the suite names a class that is not in `class_names`."""
        known = list(class_names)
        unknown = [name for name in self.expectations if name not in known]
        if not unknown:
            return
        listed = ", ".join(
            f"{name!r} (line {self.class_lines[name]})" if name in self.class_lines else repr(name)
            for name in unknown
        )
        raise ConfigError(
            f"{self.path}: the suite names classes that the classifier does not have: {listed}. "
            f"The classifier's classes are: {', '.join(known)}. Rename or remove them under "
            "`classes:`, or evaluate a model that has these classes."
        )

    def layer_indices(self, num_ws: int) -> list[int]:
        """Return the W+ indices the direction may use, checked against the generator's num_ws."""
        if self.search.layers is None:
            return list(range(num_ws))
        too_large = [index for index in self.search.layers if index >= num_ws]
        if too_large:
            where = f"{self.path}:{self.layers_line}" if self.layers_line else str(self.path)
            raise ConfigError(
                f"{where}: search.layers: W+ index {too_large[0]} is out of range because the "
                f"generator has num_ws = {num_ws} (indices 0-{num_ws - 1}); use indices below "
                f"{num_ws} or `all`"
            )
        return list(self.search.layers)

    def to_dict(self) -> dict[str, object]:
        """Return the resolved suite as plain JSON-ready values."""
        search = self.search
        return {
            "path": str(self.path.resolve()),
            "sha256": self.sha256,
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "generator": str(self.generator),
            "identity": str(self.identity),
            "classifier": {
                "classes": list(self.classifier_classes) if self.classifier_classes else None,
                "allow_pickle": self.allow_pickle,
                "preprocessing": None
                if self.preprocessing is None
                else {
                    "resolution": self.preprocessing.resolution,
                    "mean": list(self.preprocessing.mean),
                    "std": list(self.preprocessing.std),
                },
            },
            "regions": {
                "preset": self.regions.preset,
                "face_crop": list(self.regions.face_crop),
                "skin": list(self.regions.skin),
            },
            "search": {
                "num_samples": search.num_samples,
                "seed": search.seed,
                "truncation_psi": search.truncation_psi,
                "steps": search.steps,
                "learning_rate": search.learning_rate,
                "lambda_id": search.lambda_id,
                "lambda_l2": search.lambda_l2,
                "layers": "all" if search.layers is None else list(search.layers),
                "alpha_max": search.alpha_max,
                "num_frames": search.num_frames,
                "bootstrap": {
                    "num_resamples": search.bootstrap.num_resamples,
                    "confidence": search.bootstrap.confidence,
                    "seed": search.bootstrap.seed,
                },
            },
            "classes": {
                name: {"expect": [expectation.to_dict() for expectation in expectations]}
                for name, expectations in self.expectations.items()
            },
        }
