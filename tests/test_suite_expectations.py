"""Parsing of expectation strings: `[abs(]METRIC[)] OP NUMBER`."""

from __future__ import annotations

import pytest

from harness.metrics import METRICS
from harness.suite import Expectation, ExpectationSyntaxError, parse_expectation

KNOWN = ", ".join(sorted(METRICS))


@pytest.mark.parametrize(
    ("text", "metric", "use_abs", "op", "threshold"),
    [
        pytest.param("target_prob_gain >= 0.5", "target_prob_gain", False, ">=", 0.5, id="ge"),
        pytest.param("identity_cos_sim>0.6", "identity_cos_sim", False, ">", 0.6, id="no-spaces"),
        pytest.param(
            "abs(skin_ita_delta_deg) <= 8", "skin_ita_delta_deg", True, "<=", 8.0, id="abs"
        ),
        pytest.param(
            "  abs( skin_L_delta )  <  -2.5e0 ", "skin_L_delta", True, "<", -2.5, id="padded"
        ),
        pytest.param("skin_hue_delta_deg < .5", "skin_hue_delta_deg", False, "<", 0.5, id="dot"),
    ],
)
def test_parse_valid(text: str, metric: str, use_abs: bool, op: str, threshold: float) -> None:
    expectation = parse_expectation(text)
    assert expectation.metric == metric
    assert expectation.use_abs is use_abs
    assert expectation.op == op
    assert expectation.threshold == threshold
    assert expectation.statistic == "mean"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "abs(skin_ita_delta_deg) == 8",
            "unsupported operator '==' in 'abs(skin_ita_delta_deg) == 8'; "
            "use one of >=, <=, >, <",
            id="double-equals",
        ),
        pytest.param(
            "identity_cos_sim => 0.6",
            "unsupported operator '=>' in 'identity_cos_sim => 0.6'; use one of >=, <=, >, <",
            id="reversed-ge",
        ),
        pytest.param(
            "identity_cosine >= 0.6",
            f"unknown metric 'identity_cosine'; known metrics: {KNOWN} "
            "(in 'identity_cosine >= 0.6')",
            id="unknown-metric",
        ),
        pytest.param(
            "abs(skin_ita) <= 8",
            f"unknown metric 'skin_ita'; known metrics: {KNOWN} (in 'abs(skin_ita) <= 8')",
            id="unknown-metric-in-abs",
        ),
        pytest.param(
            "target_prob_gain >= half",
            "the threshold 'half' in 'target_prob_gain >= half' is not a number; write "
            "`[abs(]METRIC[)] OP NUMBER`, e.g. `abs(skin_ita_delta_deg) <= 8`",
            id="threshold-word",
        ),
        pytest.param(
            "target_prob_gain >= nan",
            "the threshold in 'target_prob_gain >= nan' must be a finite number, got 'nan'",
            id="threshold-nan",
        ),
        pytest.param(
            "target_prob_gain",
            "cannot parse expectation 'target_prob_gain'; write "
            "`[abs(]METRIC[)] OP NUMBER`, e.g. `abs(skin_ita_delta_deg) <= 8`",
            id="no-operator",
        ),
        pytest.param(
            "sqrt(skin_L_delta) < 2",
            "cannot parse the left side 'sqrt(skin_L_delta)' of 'sqrt(skin_L_delta) < 2'; write "
            "`[abs(]METRIC[)] OP NUMBER`, e.g. `abs(skin_ita_delta_deg) <= 8`",
            id="other-function",
        ),
    ],
)
def test_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(ExpectationSyntaxError) as raised:
        parse_expectation(text)
    assert str(raised.value) == message


def test_unknown_statistic_rejected() -> None:
    with pytest.raises(ExpectationSyntaxError) as raised:
        parse_expectation("target_prob_gain >= 0.5", statistic="median")  # type: ignore[arg-type]
    assert str(raised.value) == (
        "unknown statistic 'median'; use one of mean, ci_low, ci_high, interval"
    )


def test_expectation_text_and_key() -> None:
    expectation = parse_expectation("abs(skin_ita_delta_deg) <= 8.0", statistic="interval")
    assert str(expectation) == "abs(skin_ita_delta_deg) <= 8"
    assert expectation.expression == "abs(skin_ita_delta_deg)"
    assert expectation.key == ("skin_ita_delta_deg", True)
    assert not expectation.is_lower_bound
    assert expectation.to_dict() == {
        "check": "abs(skin_ita_delta_deg) <= 8",
        "metric": "skin_ita_delta_deg",
        "abs": True,
        "op": "<=",
        "threshold": 8.0,
        "statistic": "interval",
        "source": "class",
    }


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        pytest.param(">=", 0.5, True, id="ge-equal-passes"),
        pytest.param(">", 0.5, False, id="gt-equal-fails"),
        pytest.param("<=", 0.5, True, id="le-equal-passes"),
        pytest.param("<", 0.5, False, id="lt-equal-fails"),
        pytest.param(">=", 0.4999, False, id="ge-below"),
        pytest.param("<", 0.4999, True, id="lt-below"),
    ],
)
def test_compare_boundary(op: str, value: float, expected: bool) -> None:
    expectation = Expectation(metric="target_prob_gain", use_abs=False, op=op, threshold=0.5)
    assert expectation.compare(value) is expected
