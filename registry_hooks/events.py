"""Registry events, from a webhook payload or a poll, and how they become jobs.

A webhook body, as MLflow 3.3+ sends it (`mlflow/webhooks/delivery.py`), is
`{"entity": ..., "action": ..., "timestamp": ISO 8601, "data": {...}}`. `data` has the fields
of the payload types in `mlflow/webhooks/types.py`. For example, `model_version_alias.created`
carries `{"name", "alias", "version"}` and `model_version_tag.set` carries
`{"name", "version", "key", "value"}`. The alias payload does not say which version held the
alias before, so the queue keeps a table of alias holders, updated by every alias event.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from registry_hooks.config import OWN_TAG_PREFIX, GateConfig, ModelGate
from registry_hooks.queue import QueueTransaction
from registry_hooks.signature import DeliveryRejected

log = logging.getLogger(__name__)

VERSION_CREATED = "model_version.created"
ALIAS_CREATED = "model_version_alias.created"
ALIAS_DELETED = "model_version_alias.deleted"
TAG_SET = "model_version_tag.set"
# MLflow sends no webhook for the deprecated stage transitions; only `gate watch` reports them.
STAGE_TRANSITION = "stage_transition"

# The string fields each model-registry event must carry in `data`.
_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "registered_model.created": ("name",),
    VERSION_CREATED: ("name", "version"),
    TAG_SET: ("name", "version", "key", "value"),
    "model_version_tag.deleted": ("name", "version", "key"),
    ALIAS_CREATED: ("name", "alias", "version"),
    ALIAS_DELETED: ("name", "alias"),
}
# The events `latentgate gate install` subscribes to by default: those that can trigger a job
# or move an alias.
DEFAULT_WEBHOOK_EVENTS = (VERSION_CREATED, ALIAS_CREATED, ALIAS_DELETED, TAG_SET)
MODEL_REGISTRY_EVENTS = tuple(_REQUIRED_FIELDS)


@dataclass(frozen=True)
class RegistryEvent:
    """A change to one registered model, as a webhook delivery or a poll reports it."""

    event: str  # an MLflow webhook event name, or STAGE_TRANSITION
    model: str
    version: str | None = None
    alias: str | None = None
    key: str | None = None
    value: str | None = None
    stage: str | None = None
    source: str = "webhook"  # or "poll"

    def describe(self) -> str:
        details = [
            f"{field}={getattr(self, field)}"
            for field in ("alias", "key", "value", "stage")
            if getattr(self, field) is not None
        ]
        return " ".join([self.event, f"{self.model}/{self.version or '-'}", *details])


@dataclass(frozen=True)
class RouteOutcome:
    """Routing result of an event: `queued`, `merged` into a pending job, or `ignored`, and why."""

    status: str
    reason: str
    job_id: int | None = None


def _is_mlflow_event(name: str) -> bool:
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.exceptions import MlflowException

    try:
        WebhookEvent.from_str(name)
    except (MlflowException, ValueError):
        return False
    return True


def parse_webhook_body(body: bytes) -> RegistryEvent | str:
    """Parse a delivery body into a model-registry event, or return the name of another event.

    Another event is one MLflow defines but the gate does not act on (prompts, budgets).
    Raises DeliveryRejected with 400 for a body that is not a JSON object, and 422 for an
    unknown event or a payload that lacks a field.
    """
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DeliveryRejected(400, f"malformed JSON body: {error}") from None
    if not isinstance(payload, dict):
        raise DeliveryRejected(400, "the body must be a JSON object")
    entity, action, data = payload.get("entity"), payload.get("action"), payload.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, dict):
        raise DeliveryRejected(
            422, "the payload needs string 'entity' and 'action' fields and a 'data' object"
        )
    name = f"{entity}.{action}"
    if name not in _REQUIRED_FIELDS:
        if _is_mlflow_event(name):
            return name
        raise DeliveryRejected(422, f"unknown event {name[:100]!r}")
    missing = [field for field in _REQUIRED_FIELDS[name] if not isinstance(data.get(field), str)]
    if missing:
        raise DeliveryRejected(
            422, f"{name} payload lacks string field(s): {', '.join(missing)}"
        )
    version = data.get("version")
    if version is not None and not version.isdigit():
        raise DeliveryRejected(422, f"{name} payload has a non-numeric version {version[:40]!r}")
    return RegistryEvent(
        event=name,
        model=data["name"],
        version=version,
        alias=data.get("alias"),
        key=data.get("key"),
        value=data.get("value"),
    )


def _trigger(model: ModelGate, event: RegistryEvent, previous: str | None) -> dict[str, Any] | None:
    """Return the trigger record if `event` is one of the model's triggers, else None."""
    trigger: dict[str, Any] = {"event": event.event, "source": event.source}
    if event.event == VERSION_CREATED and model.version_created:
        return trigger
    if event.event == ALIAS_CREATED and event.alias in model.aliases:
        trigger.update(
            alias=event.alias,
            previous_version=previous,
            protected=event.alias in model.protected_aliases,
        )
        return trigger
    if event.event == TAG_SET and event.key in model.tags and model.tags[event.key] == event.value:
        trigger.update(key=event.key, value=event.value)
        return trigger
    if event.event == STAGE_TRANSITION and event.stage in model.stages:
        trigger.update(stage=event.stage)
        return trigger
    return None


def route_event(config: GateConfig, tx: QueueTransaction, event: RegistryEvent) -> RouteOutcome:
    """Update the alias holders for `event` and queue the evaluation it triggers, if any."""
    model = config.models.get(event.model)
    if event.key is not None and event.key.startswith(OWN_TAG_PREFIX):
        return RouteOutcome("ignored", f"tag {event.key!r} is one the gate writes itself")
    if model is None:
        return RouteOutcome("ignored", f"model {event.model!r} is not in {config.path.name}")

    previous = None
    if event.event in (ALIAS_CREATED, ALIAS_DELETED):
        assert event.alias is not None
        own_write = tx.consume_own_alias_write(event.model, event.alias, event.version)
        previous = tx.move_alias(event.model, event.alias, event.version)
        if own_write:
            return RouteOutcome("ignored", f"the gate itself moved alias {event.alias!r}")

    trigger = _trigger(model, event, previous)
    if trigger is None:
        return RouteOutcome("ignored", f"no trigger in {config.path.name} matches this event")
    assert event.version is not None
    job_id, merged = tx.enqueue(model.name, event.version, str(model.suite), trigger)
    if merged:
        return RouteOutcome("merged", f"merged into pending job {job_id}", job_id)
    return RouteOutcome("queued", f"queued job {job_id}", job_id)
