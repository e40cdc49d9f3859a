"""The gate: checks against thresholds, class statuses, the verdict and its report."""

from __future__ import annotations

import json
import math

import pytest

from harness.gate import (
    ClassOutcome,
    Measurement,
    evaluate_check,
    evaluate_gate,
    format_check,
    format_report,
)
from harness.suite import parse_expectation


def measured(mean: float, ci_low: float, ci_high: float, num_samples: int = 16) -> Measurement:
    return Measurement(mean, ci_low, ci_high, num_samples, confidence=0.95)


def check_status(text: str, measurement: Measurement, statistic: str = "mean") -> str:
    expectation = parse_expectation(text, statistic=statistic)
    outcome = ClassOutcome({expectation.metric: measurement})
    return evaluate_check("bob", expectation, outcome).status


@pytest.mark.parametrize(
    ("text", "mean", "expected"),
    [
        pytest.param("target_prob_gain >= 0.5", 0.5, "pass", id="ge-equal-passes"),
        pytest.param("target_prob_gain > 0.5", 0.5, "fail", id="gt-equal-fails"),
        pytest.param("identity_cos_sim <= 0.6", 0.6, "pass", id="le-equal-passes"),
        pytest.param("identity_cos_sim < 0.6", 0.6, "fail", id="lt-equal-fails"),
        pytest.param("target_prob_gain >= 0.5", 0.49, "fail", id="ge-below-fails"),
        pytest.param("skin_L_delta >= -4", -3.0, "pass", id="negative-threshold"),
        pytest.param("abs(skin_ita_delta_deg) <= 8", -9.0, "fail", id="abs-negative-too-large"),
        pytest.param("abs(skin_ita_delta_deg) <= 8", 7.5, "pass", id="abs-positive-within"),
        pytest.param("abs(skin_ita_delta_deg) <= 8", -8.0, "pass", id="abs-equal-passes"),
        pytest.param("skin_ita_delta_deg <= 8", -9.0, "pass", id="signed-ignores-size"),
        pytest.param("abs(skin_hue_delta_deg) >= 1", -2.0, "pass", id="abs-lower-bound"),
    ],
)
def test_mean_against_threshold(text: str, mean: float, expected: str) -> None:
    assert check_status(text, measured(mean, mean - 0.1, mean + 0.1)) == expected


@pytest.mark.parametrize(
    ("text", "statistic", "interval", "expected"),
    [
        # mean 0.7 passes, but the lower end of the interval does not.
        pytest.param("identity_cos_sim >= 0.6", "mean", (0.55, 0.85), "pass", id="mean"),
        pytest.param("identity_cos_sim >= 0.6", "ci_low", (0.55, 0.85), "fail", id="ci-low"),
        pytest.param("identity_cos_sim >= 0.6", "ci_high", (0.55, 0.85), "pass", id="ci-high"),
        pytest.param(
            "identity_cos_sim >= 0.6", "interval", (0.55, 0.85), "fail", id="interval-lower"
        ),
        pytest.param(
            "identity_cos_sim >= 0.6", "interval", (0.6, 0.85), "pass", id="interval-lower-equal"
        ),
        pytest.param(
            "identity_cos_sim <= 0.8", "interval", (0.55, 0.85), "fail", id="interval-upper"
        ),
        pytest.param(
            "identity_cos_sim <= 0.9", "interval", (0.55, 0.85), "pass", id="interval-inside"
        ),
    ],
)
def test_statistic_choice(
    text: str, statistic: str, interval: tuple[float, float], expected: str
) -> None:
    assert check_status(text, measured(0.7, *interval), statistic) == expected


def test_abs_interval_spanning_zero() -> None:
    # abs() of [-0.5, 3] is [0, 3], so the smallest |x| in the interval is 0.
    expectation = parse_expectation("abs(skin_ita_delta_deg) >= 1", statistic="interval")
    outcome = ClassOutcome({"skin_ita_delta_deg": measured(1.5, -0.5, 3.0)})
    result = evaluate_check("afro", expectation, outcome)
    assert result.status == "fail"
    assert result.value == 0.0
    assert (result.mean, result.ci_low, result.ci_high) == (1.5, 0.0, 3.0)


def test_abs_interval_one_sided() -> None:
    expectation = parse_expectation("abs(skin_ita_delta_deg) <= 8", statistic="interval")
    outcome = ClassOutcome({"skin_ita_delta_deg": measured(-10.0, -12.0, -7.0)})
    result = evaluate_check("long_braids", expectation, outcome)
    assert result.status == "fail"
    assert result.value == 12.0
    assert (result.ci_low, result.ci_high) == (7.0, 12.0)
    assert result.measured_mean == -10.0


@pytest.mark.parametrize(
    ("measurement", "message"),
    [
        pytest.param(
            measured(math.nan, 0.1, 0.2),
            "invalid measurement of identity_cos_sim: mean is nan",
            id="nan-mean",
        ),
        pytest.param(
            measured(0.7, -math.inf, 0.8),
            "invalid measurement of identity_cos_sim: ci_low is -inf",
            id="infinite-ci",
        ),
        pytest.param(
            measured(0.7, 0.8, 0.6),
            "invalid measurement of identity_cos_sim: the interval [0.8, 0.6] is reversed",
            id="reversed-interval",
        ),
        pytest.param(
            measured(0.7, 0.6, 0.8, num_samples=0),
            "invalid measurement of identity_cos_sim: num_samples is 0",
            id="no-samples",
        ),
    ],
)
def test_invalid_measurement_is_error(measurement: Measurement, message: str) -> None:
    expectation = parse_expectation("identity_cos_sim >= 0.6")
    result = evaluate_check("bob", expectation, ClassOutcome({"identity_cos_sim": measurement}))
    assert result.status == "error"
    assert result.message == message


def test_missing_measurement_is_error() -> None:
    expectation = parse_expectation("identity_cos_sim >= 0.6")
    result = evaluate_check("bob", expectation, ClassOutcome({}))
    assert result.status == "error"
    assert result.message == "no measurement of identity_cos_sim"


SUITE_EXPECTATIONS = {
    name: tuple(
        parse_expectation(text)
        for text in (
            "target_prob_gain >= 0.5",
            "identity_cos_sim >= 0.6",
            "abs(skin_ita_delta_deg) <= 8",
        )
    )
    for name in ("bob", "long_braids", "afro")
}


def good_outcome() -> ClassOutcome:
    return ClassOutcome(
        {
            "target_prob_gain": measured(0.8, 0.7, 0.9),
            "identity_cos_sim": measured(0.75, 0.7, 0.8),
            "skin_ita_delta_deg": measured(-1.0, -2.0, 0.5),
        }
    )


def bad_outcome() -> ClassOutcome:
    """Fails all three checks."""
    return ClassOutcome(
        {
            "target_prob_gain": measured(0.2, 0.1, 0.3),
            "identity_cos_sim": measured(0.4, 0.3, 0.5),
            "skin_ita_delta_deg": measured(-12.0, -14.0, -10.0),
        }
    )


def test_verdict_pass() -> None:
    result = evaluate_gate(
        SUITE_EXPECTATIONS, {name: good_outcome() for name in SUITE_EXPECTATIONS}
    )
    assert result.verdict == "pass"
    assert result.exit_code == 0
    assert [c.status for c in result.classes] == ["pass", "pass", "pass"]
    assert result.failed == []
    assert result.errored == []


def test_verdict_fail_lists_every_failed_check() -> None:
    outcomes = {"bob": good_outcome(), "long_braids": bad_outcome(), "afro": good_outcome()}
    result = evaluate_gate(SUITE_EXPECTATIONS, outcomes)
    assert result.verdict == "fail"
    assert result.exit_code == 1
    assert [c.status for c in result.classes] == ["pass", "fail", "pass"]
    # No short-circuit: all three checks of the failing class were evaluated.
    assert result.failed == [
        "long_braids.target_prob_gain",
        "long_braids.identity_cos_sim",
        "long_braids.skin_ita_delta_deg",
    ]
    assert len(result.checks) == 9


@pytest.mark.parametrize(
    ("statuses", "verdict", "exit_code"),
    [
        pytest.param(("pass", "pass", "pass"), "pass", 0, id="all-pass"),
        pytest.param(("pass", "fail", "pass"), "fail", 1, id="one-fail"),
        pytest.param(("fail", "error", "pass"), "error", 2, id="error-beats-fail"),
        pytest.param(("error", "pass", "pass"), "error", 2, id="error-alone"),
    ],
)
def test_verdict_precedence(statuses: tuple[str, ...], verdict: str, exit_code: int) -> None:
    make = {
        "pass": good_outcome,
        "fail": bad_outcome,
        "error": lambda: ClassOutcome(error="non-finite loss at step 37"),
    }
    outcomes = {name: make[status]() for name, status in zip(SUITE_EXPECTATIONS, statuses)}
    result = evaluate_gate(SUITE_EXPECTATIONS, outcomes)
    assert [c.status for c in result.classes] == list(statuses)
    assert result.verdict == verdict
    assert result.exit_code == exit_code


def test_errored_check_makes_class_error_not_fail() -> None:
    outcome = bad_outcome()
    measurements = dict(outcome.measurements)
    measurements["identity_cos_sim"] = measured(math.nan, math.nan, math.nan)
    outcomes = {
        "bob": good_outcome(),
        "long_braids": ClassOutcome(measurements),
        "afro": good_outcome(),
    }
    result = evaluate_gate(SUITE_EXPECTATIONS, outcomes)
    braids = result.classes[1]
    assert [c.status for c in braids.checks] == ["fail", "error", "fail"]
    assert braids.status == "error"
    assert result.verdict == "error"
    assert result.failed == ["long_braids.target_prob_gain", "long_braids.skin_ita_delta_deg"]
    assert result.errored == ["long_braids.identity_cos_sim"]


def test_class_error_with_measurements_is_error() -> None:
    # Passing measurements cannot hide an error the class reported.
    outcome = ClassOutcome(good_outcome().measurements, error="non-finite latent at step 3")
    outcomes = {"bob": good_outcome(), "long_braids": outcome, "afro": good_outcome()}
    result = evaluate_gate(SUITE_EXPECTATIONS, outcomes)
    assert [c.status for c in result.classes[1].checks] == ["pass", "pass", "pass"]
    assert result.classes[1].status == "error"
    assert result.classes[1].error == "non-finite latent at step 3"
    assert result.verdict == "error"


def test_missing_outcome_is_error() -> None:
    result = evaluate_gate(SUITE_EXPECTATIONS, {"bob": good_outcome(), "afro": good_outcome()})
    braids = result.classes[1]
    assert braids.status == "error"
    assert braids.error == "no measurements were produced for this class"
    assert braids.checks[0].message == (
        "no measurement of target_prob_gain because the class stopped with an error"
    )
    assert result.verdict == "error"


def test_outcome_for_unknown_class_rejected() -> None:
    outcomes = {name: good_outcome() for name in SUITE_EXPECTATIONS}
    outcomes["mohawk"] = good_outcome()
    with pytest.raises(ValueError, match="suite does not name: mohawk"):
        evaluate_gate(SUITE_EXPECTATIONS, outcomes)


def test_result_is_json_serialisable() -> None:
    outcome = bad_outcome()
    measurements = dict(outcome.measurements)
    measurements["identity_cos_sim"] = measured(math.nan, 0.1, 0.2)
    outcomes = {
        "bob": good_outcome(),
        "long_braids": ClassOutcome(measurements),
        "afro": ClassOutcome(error="non-finite loss at step 37"),
    }

    data = json.loads(json.dumps(evaluate_gate(SUITE_EXPECTATIONS, outcomes).to_dict(),
                                 allow_nan=False))
    assert data["verdict"] == "error"
    assert data["exit_code"] == 2
    assert data["failed"] == ["long_braids.target_prob_gain", "long_braids.skin_ita_delta_deg"]

    braids_identity = data["classes"]["long_braids"]["checks"][1]
    assert braids_identity["status"] == "error"
    assert braids_identity["measured_mean"] is None
    assert braids_identity["message"] == "invalid measurement of identity_cos_sim: mean is nan"

    skin = data["classes"]["long_braids"]["checks"][2]
    assert skin == {
        "class": "long_braids",
        "check": "abs(skin_ita_delta_deg) <= 8",
        "metric": "skin_ita_delta_deg",
        "abs": True,
        "op": "<=",
        "threshold": 8.0,
        "statistic": "mean",
        "status": "fail",
        "value": 12.0,
        "mean": 12.0,
        "ci_low": 10.0,
        "ci_high": 14.0,
        "measured_mean": -12.0,
        "num_samples": 16,
        "confidence": 0.95,
        "direction": "neither direction is better",
        "message": None,
    }
    assert data["classes"]["afro"]["error"] == "non-finite loss at step 37"


def test_measurement_from_dict() -> None:
    measurement = Measurement.from_dict(
        {"mean": 0.5, "ci_low": 0.25, "ci_high": 0.75, "num_samples": 8}
    )
    assert measurement == Measurement(0.5, 0.25, 0.75, 8, None)


def test_check_line_format() -> None:
    expectation = parse_expectation("abs(skin_ita_delta_deg) <= 8")
    outcome = ClassOutcome({"skin_ita_delta_deg": measured(-12.345, -14.0, -10.5)})
    line = format_check(evaluate_check("long_braids", expectation, outcome))
    assert line == (
        "FAIL  long_braids  abs(skin_ita_delta_deg) <= 8: value 12.35 (mean), 95% CI "
        "[10.5, 14], n=16, signed mean -12.35; neither direction is better"
    )


def test_report_lines() -> None:
    outcomes = {
        "bob": good_outcome(),
        "long_braids": bad_outcome(),
        "afro": ClassOutcome(error="non-finite loss at step 37"),
    }
    lines = format_report(evaluate_gate(SUITE_EXPECTATIONS, outcomes))
    assert lines == [
        "verdict: ERROR (classes: 1 pass, 1 fail, 1 error)",
        "PASS  bob          target_prob_gain >= 0.5: value 0.8 (mean), 95% CI [0.7, 0.9], "
        "n=16; higher is better",
        "PASS  bob          identity_cos_sim >= 0.6: value 0.75 (mean), 95% CI [0.7, 0.8], "
        "n=16; higher is better",
        "PASS  bob          abs(skin_ita_delta_deg) <= 8: value 1 (mean), 95% CI [0, 2], n=16, "
        "signed mean -1; neither direction is better",
        "FAIL  long_braids  target_prob_gain >= 0.5: value 0.2 (mean), 95% CI [0.1, 0.3], "
        "n=16; higher is better",
        "FAIL  long_braids  identity_cos_sim >= 0.6: value 0.4 (mean), 95% CI [0.3, 0.5], "
        "n=16; higher is better",
        "FAIL  long_braids  abs(skin_ita_delta_deg) <= 8: value 12 (mean), 95% CI [10, 14], "
        "n=16, signed mean -12; neither direction is better",
        "ERROR afro         class stopped: non-finite loss at step 37",
        "ERROR afro         target_prob_gain >= 0.5: no measurement of target_prob_gain "
        "because the class stopped with an error",
        "ERROR afro         identity_cos_sim >= 0.6: no measurement of identity_cos_sim "
        "because the class stopped with an error",
        "ERROR afro         abs(skin_ita_delta_deg) <= 8: no measurement of skin_ita_delta_deg "
        "because the class stopped with an error",
        "failed: long_braids.target_prob_gain, long_braids.identity_cos_sim, "
        "long_braids.skin_ita_delta_deg",
        "errored: afro.target_prob_gain, afro.identity_cos_sim, afro.skin_ita_delta_deg",
    ]
