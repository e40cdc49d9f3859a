"""Exceptions for mistakes a user can make.

Every error a user can cause (a bad path, a malformed file, an unknown model) is raised as a
subclass of `LatentGateError`. Its message names the file, key or URI, the rule that was broken
and the fix. The command line prints the message without a traceback and exits with
`EXIT_BAD_INPUT`. Internal invariants use `assert` instead.
"""

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_BAD_INPUT = 2


class LatentGateError(Exception):
    """An error caused by the user's input, reported without a traceback."""

    exit_code = EXIT_BAD_INPUT


class CheckpointError(LatentGateError):
    """A generator, identity or classifier weights file that cannot be loaded."""


class UnsafeCheckpointError(CheckpointError):
    """A weights file whose pickle asks to import or call something outside the allowed set."""


class ShapeError(LatentGateError):
    """A tensor given to a public function whose shape does not fit the model."""


class ConfigError(LatentGateError):
    """A suite or configuration file that is malformed or violates a rule."""


class RegistryError(LatentGateError):
    """A model URI, registered model, version, alias or tracking store that cannot be used."""


class ValueRangeError(LatentGateError):
    """A tensor given to a public function whose values lie outside the documented range."""
