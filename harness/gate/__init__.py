"""The gate: evaluate a suite's expectations on measurements and decide pass, fail or error."""

from harness.gate.evaluate import (
    EXIT_CODES,
    CheckResult,
    ClassOutcome,
    ClassResult,
    GateResult,
    Measurement,
    evaluate_check,
    evaluate_gate,
)
from harness.gate.report import format_check, format_report

__all__ = [
    "EXIT_CODES",
    "CheckResult",
    "ClassOutcome",
    "ClassResult",
    "GateResult",
    "Measurement",
    "evaluate_check",
    "evaluate_gate",
    "format_check",
    "format_report",
]
