"""The suite file's schema, as pydantic models.

These models describe the file exactly as written: every section rejects unknown keys, and
types are strict, so a quoted number or a float where an integer belongs is an error instead of
a silent conversion. `harness.suite.loader` validates a file against `SuiteFile`, maps each
error to its line, and turns the result into a resolved `Suite`. `suites/example.yaml`
documents every key.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.suite.expectations import ExpectationSyntaxError, Statistic, parse_expectation
from harness.suite.regions import PRESET_NAMES

_LAYER_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_box(box: list[float]) -> list[float]:
    if len(box) != 4:
        raise ValueError(f"a box is [x0, y0, x1, y1], 4 numbers; got {len(box)}")
    for position, value in zip(("x0", "y0", "x1", "y1"), box):
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{position} = {value} is outside [0, 1]; boxes are in normalised image "
                "coordinates, so divide pixel coordinates by the image size"
            )
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"the box {box} is empty; it needs x0 < x1 and y0 < y1")
    return box


class PreprocessingSection(_Section):
    """Classifier input preprocessing, used when the registered model's metadata lacks it."""

    resolution: int = Field(gt=0)
    mean: list[float]
    std: list[float]

    @field_validator("mean", "std")
    @classmethod
    def _three_channels(cls, values: list[float]) -> list[float]:
        if len(values) != 3:
            raise ValueError(f"needs 3 numbers, one per RGB channel; got {len(values)}")
        return values

    @field_validator("std")
    @classmethod
    def _positive_std(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError(f"every std must be > 0, got {values}")
        return values


class ClassifierSection(_Section):
    classes: list[str] | None = None
    preprocessing: PreprocessingSection | None = None
    # Loading a pickle-format MLflow model runs code stored in the artifact; off unless trusted.
    allow_pickle: bool = False

    @field_validator("classes")
    @classmethod
    def _distinct_names(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return names
        if not names:
            raise ValueError(
                "the class list is empty; list the classifier's classes in output order"
            )
        if any(not name.strip() for name in names):
            raise ValueError("class names must not be empty")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"class names must be distinct; repeated: {', '.join(repeated)}")
        return names


class RegionsSection(_Section):
    preset: Literal["demo", "ffhq1024"] | None = None
    face_crop: list[float] | None = None
    skin: list[float] | None = None

    @field_validator("face_crop", "skin")
    @classmethod
    def _valid_box(cls, box: list[float] | None) -> list[float] | None:
        return None if box is None else _check_box(box)

    @model_validator(mode="after")
    def _preset_or_both_boxes(self) -> RegionsSection:
        if self.preset is None and (self.face_crop is None or self.skin is None):
            raise ValueError(
                f"without a preset both face_crop and skin are required; set preset to one of "
                f"{', '.join(PRESET_NAMES)} or give both boxes"
            )
        return self


class BootstrapSection(_Section):
    num_resamples: int = Field(1000, ge=1)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0)


class SearchSection(_Section):
    # A bootstrap interval over one sample is a single point, so at least two are required.
    num_samples: int = Field(16, ge=2)
    seed: int = Field(0, ge=0)
    truncation_psi: float = Field(0.7, gt=0.0, le=1.0)
    steps: int = Field(100, ge=1)
    learning_rate: float = Field(0.05, gt=0.0)
    lambda_id: float = Field(1.0, ge=0.0)
    lambda_l2: float = Field(0.01, ge=0.0)
    layers: Any = "all"
    alpha_max: float = Field(2.0, gt=0.0)
    num_frames: int = Field(9, ge=2)
    bootstrap: BootstrapSection = Field(default_factory=BootstrapSection)

    @field_validator("layers", mode="before")
    @classmethod
    def _parse_layers(cls, value: Any) -> str | tuple[int, ...]:
        return parse_layers(value)


def parse_layers(value: Any) -> str | tuple[int, ...]:
    """Parse `all` or a list of W+ indices and `"a-b"` ranges into sorted distinct indices."""
    if value == "all":
        return "all"
    help_text = 'use all, or a list of W+ indices and "a-b" ranges such as [0, 1, "4-7"]'
    if not isinstance(value, list):
        raise ValueError(f"invalid layers {value!r}; {help_text}")
    if not value:
        raise ValueError(f"the layer list is empty; {help_text}")
    indices: set[int] = set()
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            indices.add(item)
            continue
        match = _LAYER_RANGE.match(item) if isinstance(item, str) else None
        if match is None or int(match[1]) > int(match[2]):
            raise ValueError(f"invalid layer entry {item!r}; {help_text}")
        indices.update(range(int(match[1]), int(match[2]) + 1))
    return tuple(sorted(indices))


class ExpectationEntry(_Section):
    """One expectation: a plain string, or a mapping that also chooses the statistic."""

    check: str
    statistic: Statistic | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"check": value}
        if isinstance(value, dict):
            return value
        raise ValueError(
            f"an expectation is a string such as `identity_cos_sim >= 0.6`, or a mapping with "
            f"`check` and `statistic`; got {value!r}"
        )

    @field_validator("check")
    @classmethod
    def _valid_expression(cls, text: str) -> str:
        try:
            parse_expectation(text)
        except ExpectationSyntaxError as error:
            raise ValueError(str(error)) from None
        return text


class DefaultsSection(_Section):
    statistic: Statistic = "mean"
    expect: list[ExpectationEntry] = Field(default_factory=list)


class ClassSection(_Section):
    expect: list[ExpectationEntry] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _empty_entry(cls, value: Any) -> Any:
        # `afro:` with nothing after it reads as null; it means "defaults only", like `afro: {}`.
        return {} if value is None else value


class SuiteFile(_Section):
    version: Literal[1]
    name: str | None = None
    description: str | None = None
    generator: str
    identity: str
    classifier: ClassifierSection = Field(default_factory=ClassifierSection)
    regions: RegionsSection
    search: SearchSection = Field(default_factory=SearchSection)
    defaults: DefaultsSection = Field(default_factory=DefaultsSection)
    classes: dict[str, ClassSection]
