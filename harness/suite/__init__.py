"""Suite files: which generator, identity model, regions, search settings and expectations.

`load_suite(path)` validates a YAML suite file and returns a resolved `Suite`.
"""

from harness.suite.expectations import Expectation, ExpectationSyntaxError, parse_expectation
from harness.suite.loader import load_suite
from harness.suite.resolved import (
    BootstrapSettings,
    Preprocessing,
    Regions,
    SearchSettings,
    Suite,
)

__all__ = [
    "BootstrapSettings",
    "Expectation",
    "ExpectationSyntaxError",
    "Preprocessing",
    "Regions",
    "SearchSettings",
    "Suite",
    "load_suite",
    "parse_expectation",
]
