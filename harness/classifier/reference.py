"""Parsing of the model references users type: `hair:2`, `hair@champion`, `models:/hair/2`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import RegistryError

_ACCEPTED_FORMS = "NAME:VERSION, NAME@ALIAS, models:/NAME/VERSION or models:/NAME@ALIAS"

# MLflow allows almost any character in registered model names, but ':', '@' and '/' would make
# the short forms ambiguous, so names containing them must use the models:/ form.
_SHORT_VERSION = re.compile(r"^(?P<name>[^:@/]+):(?P<version>[0-9]+)$")
_SHORT_ALIAS = re.compile(r"^(?P<name>[^:@/]+)@(?P<alias>[A-Za-z0-9_\-]+)$")
_URI_VERSION = re.compile(r"^models:/(?P<name>[^@]+)/(?P<version>[0-9]+)$")
_URI_ALIAS = re.compile(r"^models:/(?P<name>[^@/]+)@(?P<alias>[A-Za-z0-9_\-]+)$")


@dataclass(frozen=True)
class ModelReference:
    """A registered model name plus either a version number or an alias, not yet resolved."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        assert (self.version is None) != (self.alias is None), "exactly one of version or alias"

    def __str__(self) -> str:
        if self.alias is not None:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version}"


def parse_model_reference(text: str) -> ModelReference:
    """Parse a model reference in any of the four accepted forms.

    Raises RegistryError naming the text and the accepted forms when it matches none of them.
    A stage-based URI such as `models:/hair/Production` is rejected because MLflow deprecated
    stages in favour of aliases.
    """
    text = text.strip()
    for pattern in (_SHORT_VERSION, _URI_VERSION):
        match = pattern.match(text)
        if match:
            return ModelReference(name=match["name"], version=int(match["version"]))
    for pattern in (_SHORT_ALIAS, _URI_ALIAS):
        match = pattern.match(text)
        if match:
            return ModelReference(name=match["name"], alias=match["alias"])

    hint = ""
    if text.startswith("models:/") and "@" not in text:
        hint = (
            " Stage names (Production, Staging) are not supported because MLflow deprecated "
            "stages; set an alias on the version and use NAME@ALIAS."
        )
    raise RegistryError(
        f"invalid model reference {text!r}: expected {_ACCEPTED_FORMS}, "
        f"for example hair:2 or hair@champion.{hint}"
    )
