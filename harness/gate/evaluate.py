"""Turn per-class measurements into check results, class statuses and a suite verdict.

Every expectation of every class is evaluated before anything is decided, so a report lists all
failures at once. A check passes or fails by comparing one number of its measurement with the
threshold (the expectation's `statistic`, by default the mean over samples). A check whose
measurement is missing or not finite is an error, never a pass.

A class is `error` if its search or measurement stopped with an error or any of its checks
errored, else `fail` if any check failed, else `pass`. The suite verdict is `error` if any class
errored, else `fail` if any class failed, else `pass`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from harness.errors import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS
from harness.metrics import METRICS
from harness.metrics.bootstrap import Measurement
from harness.suite.expectations import Expectation

Status = Literal["pass", "fail", "error"]

EXIT_CODES: dict[str, int] = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "error": EXIT_BAD_INPUT}


@dataclass(frozen=True)
class ClassOutcome:
    """Pipeline output for one class: its measurements, or the error that stopped it."""

    measurements: Mapping[str, Measurement] = field(default_factory=dict)
    error: str | None = None  # e.g. "non-finite loss at step 37"


def direction_text(metric: str) -> str:
    """Describe the metric's preferred direction as the registry declares it."""
    higher_is_better = METRICS[metric].higher_is_better
    if higher_is_better is None:
        return "neither direction is better"
    return "higher is better" if higher_is_better else "lower is better"


@dataclass(frozen=True)
class CheckResult:
    """One expectation of one class, evaluated.

    `mean`, `ci_low` and `ci_high` are those of the expression, so for `abs(x)` they are
    |mean| and the smallest and largest |x| in the interval; `measured_mean` keeps the sign.
    `value` is the number compared with the threshold, chosen by the expectation's statistic.
    """

    class_name: str
    expectation: Expectation
    status: Status
    value: float | None = None
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    measured_mean: float | None = None
    num_samples: int | None = None
    confidence: float | None = None
    message: str | None = None  # why the check is an error

    @property
    def metric_key(self) -> str:
        """`class.metric`, the name used in MLflow metrics and the `latentgate.failed` tag."""
        return f"{self.class_name}.{self.expectation.metric}"

    @property
    def direction(self) -> str:
        return direction_text(self.expectation.metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "check": str(self.expectation),
            "metric": self.expectation.metric,
            "abs": self.expectation.use_abs,
            "op": self.expectation.op,
            "threshold": self.expectation.threshold,
            "statistic": self.expectation.statistic,
            "status": self.status,
            "value": _json_number(self.value),
            "mean": _json_number(self.mean),
            "ci_low": _json_number(self.ci_low),
            "ci_high": _json_number(self.ci_high),
            "measured_mean": _json_number(self.measured_mean),
            "num_samples": self.num_samples,
            "confidence": self.confidence,
            "direction": self.direction,
            "message": self.message,
        }


@dataclass(frozen=True)
class ClassResult:
    name: str
    status: Status
    checks: tuple[CheckResult, ...]
    error: str | None = None  # the error that stopped the class's search or measurement

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "checks": [check.to_dict() for check in self.checks],
        }


@dataclass(frozen=True)
class GateResult:
    verdict: Status
    classes: tuple[ClassResult, ...]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def checks(self) -> list[CheckResult]:
        return [check for result in self.classes for check in result.checks]

    @property
    def failed(self) -> list[str]:
        """`class.metric` of every failed check, each once, in suite order."""
        return _unique(check.metric_key for check in self.checks if check.status == "fail")

    @property
    def errored(self) -> list[str]:
        """`class.metric` of every check that errored, each once, in suite order."""
        return _unique(check.metric_key for check in self.checks if check.status == "error")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "failed": self.failed,
            "errored": self.errored,
            "classes": {result.name: result.to_dict() for result in self.classes},
        }


def evaluate_gate(
    expectations: Mapping[str, Sequence[Expectation]],
    outcomes: Mapping[str, ClassOutcome],
) -> GateResult:
    """Evaluate every expectation of every class and decide the verdict.

    `expectations` is `Suite.expectations` (class name -> bounds). A class without an outcome
    is an error. An outcome for a class the suite does not name is a caller bug (ValueError).
    """
    extra = sorted(set(outcomes) - set(expectations))
    if extra:
        raise ValueError(f"outcomes for classes that the suite does not name: {', '.join(extra)}")

    class_results = []
    for class_name, class_expectations in expectations.items():
        outcome = outcomes.get(class_name)
        if outcome is None:
            outcome = ClassOutcome(error="no measurements were produced for this class")
        checks = tuple(
            evaluate_check(class_name, expectation, outcome)
            for expectation in class_expectations
        )
        class_results.append(
            ClassResult(
                name=class_name,
                status=_class_status(outcome, checks),
                checks=checks,
                error=outcome.error,
            )
        )

    statuses = {result.status for result in class_results}
    verdict: Status = "pass"
    if "error" in statuses:
        verdict = "error"
    elif "fail" in statuses:
        verdict = "fail"
    return GateResult(verdict=verdict, classes=tuple(class_results))


def evaluate_check(class_name: str, expectation: Expectation, outcome: ClassOutcome) -> CheckResult:
    """Evaluate one expectation against a class's outcome."""
    measurement = outcome.measurements.get(expectation.metric)
    if measurement is None:
        reason = f"no measurement of {expectation.metric}"
        if outcome.error:
            reason += " because the class stopped with an error"
        return CheckResult(class_name, expectation, "error", message=reason)

    base = CheckResult(
        class_name,
        expectation,
        "error",
        measured_mean=measurement.mean,
        num_samples=measurement.num_samples,
        confidence=measurement.confidence,
    )
    problem = _measurement_problem(measurement)
    if problem:
        return replace(base, message=f"invalid measurement of {expectation.metric}: {problem}")

    mean, ci_low, ci_high = _expression_values(expectation, measurement)
    if expectation.statistic == "mean":
        value = mean
    elif expectation.statistic == "ci_low":
        value = ci_low
    elif expectation.statistic == "ci_high":
        value = ci_high
    else:
        # `interval`: the whole interval must satisfy the bound, so test its worst end.
        value = ci_low if expectation.is_lower_bound else ci_high

    status: Status = "pass" if expectation.compare(value) else "fail"
    return replace(base, status=status, value=value, mean=mean, ci_low=ci_low, ci_high=ci_high)


def _measurement_problem(measurement: Measurement) -> str | None:
    for name in ("mean", "ci_low", "ci_high"):
        value = getattr(measurement, name)
        if not math.isfinite(value):
            return f"{name} is {value}"
    if measurement.ci_low > measurement.ci_high:
        return f"the interval [{measurement.ci_low}, {measurement.ci_high}] is reversed"
    if measurement.num_samples < 1:
        return f"num_samples is {measurement.num_samples}"
    return None


def _expression_values(
    expectation: Expectation, measurement: Measurement
) -> tuple[float, float, float]:
    """Return mean, low and high of the expression: the measurement itself, or its abs()."""
    if not expectation.use_abs:
        return measurement.mean, measurement.ci_low, measurement.ci_high
    low, high = measurement.ci_low, measurement.ci_high
    abs_low = 0.0 if low <= 0.0 <= high else min(abs(low), abs(high))
    return abs(measurement.mean), abs_low, max(abs(low), abs(high))


def _class_status(outcome: ClassOutcome, checks: Sequence[CheckResult]) -> Status:
    statuses = {check.status for check in checks}
    if outcome.error or "error" in statuses:
        return "error"
    return "fail" if "fail" in statuses else "pass"


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _json_number(value: float | None) -> float | None:
    # JSON has no NaN or infinity. A non-finite value makes the check an error, and its message
    # names the value.
    if value is None or not math.isfinite(value):
        return None
    return value
