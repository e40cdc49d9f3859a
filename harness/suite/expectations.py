"""Expectations: the bounds a suite puts on each measurement.

An expectation is written `[abs(]METRIC[)] OP NUMBER`, for example `target_prob_gain >= 0.5` or
`abs(skin_ita_delta_deg) <= 8`, with OP one of `>=`, `<=`, `>`, `<`. METRIC must be a name from
the registry in `harness.metrics`. `abs(...)` bounds the size of a change whatever its sign. It
applies to the mean and to the interval of the mean, not to each sample.

Which number of a measurement is compared is the expectation's `statistic`:

- `mean` (the default): the mean over samples;
- `ci_low` / `ci_high`: one end of the bootstrap confidence interval of that mean;
- `interval`: the whole interval must satisfy the bound, so `x >= t` compares `ci_low` and
  `x <= t` compares `ci_high` (for `abs(x)`, the smallest and the largest |x| in the interval).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Callable, Literal

from harness.metrics import get_metric

Operator = Literal[">=", "<=", ">", "<"]
Statistic = Literal["mean", "ci_low", "ci_high", "interval"]

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
STATISTICS: tuple[str, ...] = ("mean", "ci_low", "ci_high", "interval")

# Left side, an operator made of comparison characters, right side. The operator group is loose
# on purpose, so that `==` or `=>` are reported as a bad operator rather than as a syntax error.
_EXPRESSION = re.compile(r"^\s*(?P<lhs>[^<>=!]+?)\s*(?P<op>[<>=!]+)\s*(?P<rhs>.*?)\s*$")
_ABS_CALL = re.compile(r"^abs\(\s*(?P<name>[^()\s]+)\s*\)$")
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SYNTAX_HELP = "write `[abs(]METRIC[)] OP NUMBER`, e.g. `abs(skin_ita_delta_deg) <= 8`"


class ExpectationSyntaxError(ValueError):
    """An expectation string that does not follow the grammar; its message gives the fix."""


@dataclass(frozen=True)
class Expectation:
    """One parsed bound on one metric of one class."""

    metric: str
    use_abs: bool
    op: Operator
    threshold: float
    statistic: Statistic = "mean"
    # Where a resolved suite took it from: the suite's `defaults` or the class's own list.
    source: Literal["default", "class"] = field(default="class", compare=False)

    @property
    def expression(self) -> str:
        """The left side as written in a suite: `metric` or `abs(metric)`."""
        return f"abs({self.metric})" if self.use_abs else self.metric

    @property
    def key(self) -> tuple[str, bool]:
        """Metric and abs flag; a class expectation replaces the defaults with the same key."""
        return (self.metric, self.use_abs)

    @property
    def is_lower_bound(self) -> bool:
        """True for `>=` and `>`, which bound the value from below."""
        return self.op in (">=", ">")

    def compare(self, value: float) -> bool:
        """Apply the operator to `value` and the threshold."""
        return OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.expression} {self.op} {self.threshold:g}"

    def to_dict(self) -> dict[str, object]:
        return {
            "check": str(self),
            "metric": self.metric,
            "abs": self.use_abs,
            "op": self.op,
            "threshold": self.threshold,
            "statistic": self.statistic,
            "source": self.source,
        }


def parse_expectation(text: str, statistic: Statistic = "mean") -> Expectation:
    """Parse one expectation string, raising ExpectationSyntaxError with the fix on bad input."""
    if statistic not in STATISTICS:
        raise ExpectationSyntaxError(
            f"unknown statistic {statistic!r}; use one of {', '.join(STATISTICS)}"
        )
    match = _EXPRESSION.match(text)
    if match is None:
        raise ExpectationSyntaxError(f"cannot parse expectation {text!r}; {_SYNTAX_HELP}")

    op = match["op"]
    if op not in OPERATORS:
        raise ExpectationSyntaxError(
            f"unsupported operator {op!r} in {text!r}; use one of >=, <=, >, <"
        )

    lhs = match["lhs"]
    abs_call = _ABS_CALL.match(lhs)
    name = abs_call["name"] if abs_call else lhs
    if not _METRIC_NAME.match(name):
        raise ExpectationSyntaxError(
            f"cannot parse the left side {lhs!r} of {text!r}; {_SYNTAX_HELP}"
        )
    try:
        get_metric(name)
    except KeyError as error:
        raise ExpectationSyntaxError(f"{error.args[0]} (in {text!r})") from None

    threshold = _parse_threshold(match["rhs"], text)
    return Expectation(
        metric=name, use_abs=abs_call is not None, op=op, threshold=threshold, statistic=statistic
    )


def _parse_threshold(rhs: str, text: str) -> float:
    try:
        threshold = float(rhs)
    except ValueError:
        raise ExpectationSyntaxError(
            f"the threshold {rhs!r} in {text!r} is not a number; {_SYNTAX_HELP}"
        ) from None
    if not math.isfinite(threshold):
        raise ExpectationSyntaxError(
            f"the threshold in {text!r} must be a finite number, got {rhs!r}"
        )
    return threshold
