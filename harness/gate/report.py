"""Plain-text report lines of a gate result, for the terminal and the run log."""

from __future__ import annotations

from harness.gate.evaluate import CheckResult, GateResult


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def format_check(check: CheckResult, class_width: int = 0) -> str:
    """Format one check: status, class, expectation, compared value, interval, direction.

    Example: `FAIL  long_braids  abs(skin_ita_delta_deg) <= 8: value 12.4 (mean),
    95% CI [10.1, 14.7], n=16, signed mean -12.4; neither direction is better`.
    """
    head = f"{check.status.upper():<5} {check.class_name:<{class_width}}  {check.expectation}"
    if check.status == "error":
        return f"{head}: {check.message}"
    level = f"{check.confidence:.0%} CI" if check.confidence is not None else "CI"
    text = (
        f"{head}: value {_number(check.value)} ({check.expectation.statistic}), "
        f"{level} [{_number(check.ci_low)}, {_number(check.ci_high)}], n={check.num_samples}"
    )
    if check.expectation.use_abs:
        text += f", signed mean {check.measured_mean:+.4g}"
    return f"{text}; {check.direction}"


def format_report(result: GateResult) -> list[str]:
    """Return the report: verdict, one line per check, then the failed `class.metric` list."""
    counts = {status: 0 for status in ("pass", "fail", "error")}
    for class_result in result.classes:
        counts[class_result.status] += 1
    lines = [
        f"verdict: {result.verdict.upper()} (classes: {counts['pass']} pass, "
        f"{counts['fail']} fail, {counts['error']} error)"
    ]
    class_width = max((len(class_result.name) for class_result in result.classes), default=0)
    for class_result in result.classes:
        if class_result.error:
            lines.append(
                f"{'ERROR':<5} {class_result.name:<{class_width}}  class stopped: "
                f"{class_result.error}"
            )
        lines += [format_check(check, class_width) for check in class_result.checks]
    if result.failed:
        lines.append(f"failed: {', '.join(result.failed)}")
    if result.errored:
        lines.append(f"errored: {', '.join(result.errored)}")
    return lines
