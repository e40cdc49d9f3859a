"""Suite files as pytest tests: one item per class and expectation.

`pytest suites/hair.yaml --latentgate-model hair:2` collects

    suites/hair.yaml::long_braids::abs(skin_ita_delta_deg) <= 8
    suites/hair.yaml::long_braids::target_prob_gain >= 0.5
    ...

so `-k long_braids`, `-k skin_ita` and node IDs select classes and expectations. An expectation
whose statistic is not the mean carries it in its name: `identity_cos_sim >= 0.6 (interval)`.
The first item of a suite to run searches every selected class of that suite in one batch; the
other items reuse the results.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.errors import LatentGateError

if TYPE_CHECKING:
    from harness.gate import CheckResult
    from harness.pytest_plugin.session import ProbeSession
    from harness.suite import Expectation, Suite

# A suite has top-level `version:` and `classes:` keys (see suites/example.yaml). Other YAML
# files, such as CI or tool configuration, are left to whatever else collects them.
_TOP_LEVEL_KEY = re.compile(r"^(version|classes)[ \t]*:", re.MULTILINE)


def looks_like_suite(path: Path) -> bool:
    """Return whether a .yaml/.yml file has the top-level keys of a LatentGate suite.

    The test reads the text only, so a suite with a YAML syntax error is still recognised and
    its error reported. A suite written as one flow mapping (`{version: 1, ...}`) is missed.
    """
    if path.suffix not in (".yaml", ".yml"):
        return False
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return {match.group(1) for match in _TOP_LEVEL_KEY.finditer(text)} == {"version", "classes"}


class SuiteFile(pytest.File):
    """A suite YAML file, whose children are the suite's classes."""

    def __init__(self, *, probe_session: ProbeSession, problem: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.probe_session = probe_session
        self.problem = problem  # a reason not to collect the file, reported as a collection error

    def collect(self) -> Iterator[ClassNode]:
        if self.problem is not None:
            raise self.CollectError(self.problem)
        try:
            suite = self.probe_session.suite(self.path)
        except LatentGateError as error:
            # The loader's message names the file, line and key, so a traceback adds nothing.
            raise self.CollectError(str(error)) from None
        for class_name in suite.class_names:
            yield ClassNode.from_parent(self, name=class_name, suite=suite)


class ClassNode(pytest.Collector):
    """One class of a suite, whose children are the class's expectations."""

    def __init__(self, *, suite: Suite, **kwargs) -> None:
        super().__init__(**kwargs)
        self.suite = suite

    def collect(self) -> Iterator[ExpectationItem]:
        for expectation in self.suite.expectations[self.name]:
            yield ExpectationItem.from_parent(
                self, name=item_name(expectation), suite=self.suite, expectation=expectation
            )


def item_name(expectation: Expectation) -> str:
    """Name an item by its expectation as the suite writes it, e.g. `target_prob_gain >= 0.5`."""
    if expectation.statistic == "mean":
        return str(expectation)
    return f"{expectation} ({expectation.statistic})"


class ExpectationFailed(Exception):
    """A measured class that does not meet one expectation."""


class ExpectationItem(pytest.Item):
    """One expectation of one class, checked on the class's measured walk."""

    def __init__(self, *, suite: Suite, expectation: Expectation, **kwargs) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.expectation = expectation
        self.class_name = self.parent.name

    @property
    def probe_session(self) -> ProbeSession:
        return self.parent.parent.probe_session

    def runtest(self) -> None:
        from harness.gate import evaluate_check

        session = self.probe_session
        assert session.default_model is not None, "suite files are collected only with a model"
        model = session.resolve(session.default_model)
        # Every selected class of this suite in one search; `measure` drops the duplicate.
        classes = [*session.planned_classes(self.suite), self.class_name]
        result = session.measure(model, self.suite, classes)[self.class_name]
        check = evaluate_check(self.class_name, self.expectation, result.outcome)
        if check.status != "pass":
            class_error = result.outcome.error
            raise ExpectationFailed(format_check_failure(check, model.uri, result.gif, class_error))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        if isinstance(excinfo.value, ExpectationFailed):
            return str(excinfo.value)
        if isinstance(excinfo.value, LatentGateError):
            return f"{self.class_name}: {self.name}: error: {excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.suite.class_lines.get(self.class_name)
        return self.path, None if line is None else line - 1, f"{self.class_name}: {self.name}"

    def add_report_section(self, when: str, key: str, content: str) -> None:
        # The captured output of a suite item is LatentGate's own loading and search output,
        # which would bury the check. Its warnings go to the terminal summary instead.
        return


_RULES = {
    "mean": "the mean",
    "ci_low": "the interval's lower end",
    "ci_high": "the interval's upper end",
    "interval": "the whole interval",
}


def format_check_failure(
    check: CheckResult, model_uri: str, gif: Path | None, class_error: str | None = None
) -> str:
    """Describe a failed check (value, interval, threshold, GIF) or an errored one (one line).

    `class_error` is the reason the class's search stopped, if it did.
    """
    expectation = check.expectation
    head = f"{check.class_name}: {expectation}"
    if check.status == "error":
        reason = f"{check.message}: {class_error}" if class_error else check.message
        return f"{head}: error on {model_uri}: {reason}"

    level = f"{check.confidence:.0%} CI" if check.confidence is not None else "CI"
    measured = f"mean {check.mean:.4g}"
    if expectation.use_abs:
        measured += f" (signed {check.measured_mean:+.4g})"
    measured += f", {level} [{check.ci_low:.4g}, {check.ci_high:.4g}], n={check.num_samples}"
    rule = (
        f"passes when {_RULES[expectation.statistic]} of {expectation.expression} is "
        f"{expectation.op} {expectation.threshold:g}; {check.direction}"
    )
    return "\n".join(
        [
            f"{head} failed on {model_uri}",
            f"  measured:  {measured}",
            f"  threshold: {expectation.threshold:g} ({rule})",
            f"  GIF:       {gif if gif is not None else 'not available'}",
        ]
    )
