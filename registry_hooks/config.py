"""gate.yaml: which registered models the gate evaluates, with which suite, on which events.

```yaml
version: 1
tracking_uri: http://127.0.0.1:5000   # default: MLFLOW_TRACKING_URI, else MLflow's default
queue: gate-queue.db                  # SQLite job queue, relative to this file
receiver: {host: 127.0.0.1, port: 8765, path: /webhook}
models:
  hair:
    suite: suites/hair.yaml
    triggers:
      version_created: true
      aliases: [staging, champion]
      tags: {ready_for_review: "true"}
      stages: [Production]            # polling only: MLflow sends no webhook for stages
    protected_aliases: [champion]
```

The file is read with the suite loader's YAML rules and error locations, so every problem is
reported once with its line, key path and fix.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import ConfigError
from harness.suite import loader as suite_loader

log = logging.getLogger(__name__)

DEFAULT_SECRET_ENV = "LATENTGATE_WEBHOOK_SECRET"
# Standard Webhooks and MLflow use HMAC-SHA256; a shorter shared secret is easy to guess.
MIN_SECRET_CHARS = 16
# The gate writes model-version tags with this prefix itself and ignores events for them.
OWN_TAG_PREFIX = "latentgate."
# Deprecated model-version stages, as MLflow names them.
STAGES = ("Staging", "Production", "Archived", "None")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ReceiverSection(_Section):
    """Listening address of `latentgate gate serve`, and its limits for a delivery."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)  # 0: any free port
    path: str = "/webhook"
    secret_env: str = DEFAULT_SECRET_ENV  # environment variable that contains the shared secret
    max_body_bytes: int = Field(default=262_144, gt=0)
    max_timestamp_age_s: int = Field(default=300, gt=0)


class WorkerSection(_Section):
    """Settings of the worker that runs the main job."""

    device: str = "cpu"
    # Runs of a job that the service lost mid-run; after the last one the job ends `error`.
    max_attempts: int = Field(default=2, ge=1)


class WatchSection(_Section):
    """Polling settings of `latentgate gate watch`."""

    interval_s: float = Field(default=30.0, gt=0)


class TriggersSection(_Section):
    """Registry events that queue an evaluation of a model version."""

    version_created: bool = False
    aliases: list[str] = []
    tags: dict[str, str] = {}  # tag key -> the value that triggers
    stages: list[Literal["Staging", "Production", "Archived", "None"]] = []


class ModelSection(_Section):
    """One registered model: its suite, its triggers and the aliases a failing version loses."""

    suite: str
    triggers: TriggersSection
    protected_aliases: list[str] = []


class GateFile(_Section):
    """gate.yaml exactly as written."""

    version: Literal[1]
    tracking_uri: str | None = None
    queue: str = "latentgate-gate.db"
    receiver: ReceiverSection = ReceiverSection()
    worker: WorkerSection = WorkerSection()
    watch: WatchSection = WatchSection()
    models: dict[str, ModelSection]


@dataclass(frozen=True)
class ModelGate:
    """The resolved settings of one registered model."""

    name: str
    suite: Path  # absolute
    version_created: bool
    aliases: tuple[str, ...]
    tags: dict[str, str]
    stages: tuple[str, ...]
    protected_aliases: tuple[str, ...]


@dataclass(frozen=True)
class GateConfig:
    """A validated gate.yaml with paths resolved against its folder."""

    path: Path
    tracking_uri: str
    queue_path: Path
    receiver: ReceiverSection
    worker: WorkerSection
    watch: WatchSection
    models: dict[str, ModelGate]

    def read_secret(self) -> str:
        """Return the shared webhook secret from the environment; raise ConfigError if unusable."""
        return read_secret(self.receiver.secret_env, f"receiver.secret_env in {self.path}")


def read_secret(env_name: str, named_by: str) -> str:
    """Return the webhook secret in environment variable `env_name`; raise ConfigError if unusable.

    `named_by` names the setting that gave the variable's name, for the message.
    """
    secret = os.environ.get(env_name, "")
    if not secret:
        raise ConfigError(
            f"the webhook secret is missing: environment variable {env_name} ({named_by}) is "
            "unset or empty. Set the same secret for `latentgate gate install` and `latentgate "
            f"gate serve`, e.g. export {env_name}=\"$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')\"."
        )
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"the webhook secret in {env_name} has {len(secret)} characters; use at least "
            f"{MIN_SECRET_CHARS}, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'."
        )
    return secret


_Problem = suite_loader._Problem


def _alias_problem(alias: str) -> str | None:
    """Return MLflow's reason for rejecting `alias` as an alias name, or None if it is valid."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
    )

    try:
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    except MlflowException as error:
        return error.message
    return None


def _message(error: dict[str, Any]) -> str:
    if tuple(error["loc"]) == ("version",):
        return f"unsupported gate file version {error.get('input')!r}; this LatentGate reads `version: 1`"
    return suite_loader._pydantic_message(error, GateFile)


def _semantic_problems(gate_file: GateFile, config_dir: Path) -> list[_Problem]:
    problems: list[_Problem] = []
    if not gate_file.models:
        problems.append(
            _Problem(("models",), "no models listed; add at least one registered model under `models:`")
        )
    receiver = gate_file.receiver
    if not receiver.path.startswith("/"):
        problems.append(
            _Problem(("receiver", "path"), f"must start with '/', got {receiver.path!r}")
        )
    for name, model in gate_file.models.items():
        loc = ("models", name)
        triggers = model.triggers
        if not (triggers.version_created or triggers.aliases or triggers.tags or triggers.stages):
            problems.append(
                _Problem(
                    loc + ("triggers",),
                    f"model {name!r} has no trigger; set version_created: true or list aliases, "
                    "tags or stages",
                )
            )
        for index, alias in enumerate(triggers.aliases):
            reason = _alias_problem(alias)
            if reason:
                problems.append(_Problem(loc + ("triggers", "aliases", index), reason))
        for alias in model.protected_aliases:
            if alias not in triggers.aliases:
                problems.append(
                    _Problem(
                        loc + ("protected_aliases",),
                        f"alias {alias!r} is protected but does not trigger an evaluation, so a "
                        f"failing version could keep it; add it to models.{name}.triggers.aliases",
                    )
                )
        for key in triggers.tags:
            if key.startswith(OWN_TAG_PREFIX):
                problems.append(
                    _Problem(
                        loc + ("triggers", "tags", key, "[key]"),
                        f"tag {key!r} starts with {OWN_TAG_PREFIX!r}: the gate writes those tags "
                        "itself and ignores their events; choose another key",
                    )
                )
        suite = _resolve(model.suite, config_dir)
        if not suite.is_file():
            note = "" if Path(model.suite).is_absolute() else (
                f" (resolved from {model.suite!r} against the folder of the gate file)"
            )
            problems.append(_Problem(loc + ("suite",), f"suite file not found: {suite}{note}"))
    return problems


def _resolve(value: str, folder: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return (path if path.is_absolute() else folder / path).resolve()


def load_gate_config(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate gate.yaml; raise ConfigError listing every problem with its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"gate file not found: {path}. Write one as README.md's section 'Automatic gate on "
            "registry events' shows."
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the path of a gate .yaml file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (invalid byte at offset {error.start}); save it as UTF-8"
        ) from None

    root = suite_loader._compose(path, text)
    if root is None:
        raise ConfigError(f"{path}: the gate file is empty; it needs `version: 1` and `models:`")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            f"{path}:{root.start_mark.line + 1}: the top level must be a mapping of keys "
            "(version, tracking_uri, queue, receiver, worker, watch, models)"
        )
    problems = suite_loader._duplicate_keys(root)
    data = suite_loader._construct(path, root)
    gate_file: GateFile | None = None
    try:
        gate_file = GateFile.model_validate(data)
    except ValidationError as error:
        problems += [_Problem(tuple(item["loc"]), _message(item)) for item in error.errors()]
    if gate_file is not None:
        problems += _semantic_problems(gate_file, path.parent.resolve())
    if problems:
        suite_loader._raise_problems(path, root, problems, kind="gate file")
    assert gate_file is not None
    return _resolve_config(path, gate_file)


def _resolve_config(path: Path, gate_file: GateFile) -> GateConfig:
    import mlflow

    # Imported here because `harness.classifier` imports torch, which a file with errors
    # does not need.
    from harness.classifier.registry import check_registry_uri

    folder = path.parent.resolve()
    tracking_uri = gate_file.tracking_uri or mlflow.get_tracking_uri()
    check_registry_uri(tracking_uri)
    models = {
        name: ModelGate(
            name=name,
            suite=_resolve(model.suite, folder),
            version_created=model.triggers.version_created,
            aliases=tuple(model.triggers.aliases),
            tags=dict(model.triggers.tags),
            stages=tuple(model.triggers.stages),
            protected_aliases=tuple(model.protected_aliases),
        )
        for name, model in gate_file.models.items()
    }
    return GateConfig(
        path=path.resolve(),
        tracking_uri=tracking_uri,
        queue_path=_resolve(gate_file.queue, folder),
        receiver=gate_file.receiver,
        worker=gate_file.worker,
        watch=gate_file.watch,
        models=models,
    )


def check_suites(config: GateConfig) -> None:
    """Load every model's suite, so that a broken suite stops the service at start-up."""
    from harness.suite import load_suite

    for model in config.models.values():
        try:
            load_suite(model.suite)
        except ConfigError as error:
            raise ConfigError(
                f"{config.path}: models.{model.name}.suite names an invalid suite:\n{error}"
            ) from None


def is_loopback_host(host: str) -> bool:
    """Return whether `host` is a loopback address or `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
