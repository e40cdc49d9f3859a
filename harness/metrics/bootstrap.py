"""Confidence intervals over samples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Measurement:
    """One metric of one class: mean over samples and its bootstrap confidence interval."""

    mean: float
    ci_low: float
    ci_high: float
    num_samples: int
    confidence: float | None = None  # e.g. 0.95; None when the producer did not state it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(
            mean=float(data["mean"]),
            ci_low=float(data["ci_low"]),
            ci_high=float(data["ci_high"]),
            num_samples=int(data["num_samples"]),
            confidence=None if data.get("confidence") is None else float(data["confidence"]),
        )


def bootstrap_mean(
    values: np.ndarray, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Measurement:
    """Return the mean of `values` `[N]` with a percentile bootstrap interval of the mean.

    Non-finite values make every field NaN, so that a gate sees a missing measurement rather
    than a number. With a single sample the interval collapses to the value itself.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    num_samples = values.size
    if num_samples == 0 or not np.all(np.isfinite(values)):
        nan = float("nan")
        return Measurement(nan, nan, nan, num_samples, confidence)
    mean = float(values.mean())
    if num_samples == 1 or np.all(values == values[0]):
        return Measurement(mean, mean, mean, num_samples, confidence)

    # The percentile method, because BCa needs a jackknife that is unstable for the small
    # sample counts (8 to 32) a direction search uses.
    result = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=num_resamples,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Measurement(mean, float(interval.low), float(interval.high), num_samples, confidence)
