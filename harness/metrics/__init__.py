"""Measurements taken along a class direction, and the registry that names them.

Each metric has one module in this package. The registry below is the single list of metric
names that suites may use in expectations; every metric states its unit and whether a higher
value is better, so reports can say in which direction a value moved.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """Name, unit and preferred direction of one measurement."""

    name: str
    unit: str
    higher_is_better: bool | None  # None: neither direction is better, only the size of a change
    description: str


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in [
        MetricSpec(
            "target_prob_gain",
            "probability",
            True,
            "classifier probability of the target class at alpha_max minus at alpha 0",
        ),
        MetricSpec(
            "identity_cos_sim",
            "cosine",
            True,
            "ArcFace cosine similarity between the first and the last frame of the walk",
        ),
        MetricSpec(
            "skin_ita_delta_deg",
            "degrees",
            None,
            "change of the individual typology angle (ITA) of the skin region, last frame "
            "minus first; negative means darker skin",
        ),
        MetricSpec(
            "skin_L_delta",
            "CIELab L*",
            None,
            "change of the skin region's lightness L*, last frame minus first",
        ),
        MetricSpec(
            "skin_hue_delta_deg",
            "degrees",
            None,
            "change of the skin region's CIELab hue angle atan2(b*, a*), last frame minus first",
        ),
    ]
}


def get_metric(name: str) -> MetricSpec:
    """Return the spec of a metric, or raise KeyError listing the known names."""
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(sorted(METRICS))
        raise KeyError(f"unknown metric {name!r}; known metrics: {known}") from None
