"""Polling fallback: find registry changes by comparing snapshots, for stores without webhooks.

Each poll reads every configured model's aliases and versions (stage and tags) and compares
them with the snapshot the queue stores from the poll before. Each difference becomes the
event a webhook would have sent: a new version, an alias set or removed, a tag set. The tags a
new version already carries count as set, unlike with webhooks. A stage change becomes
`stage_transition`, for which MLflow sends no webhook. The first poll of a model only stores
its snapshot. Events go through the same routing, queue and write-back as webhook deliveries.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from harness.errors import ConfigError
from registry_hooks.config import OWN_TAG_PREFIX, GateConfig, ModelGate
from registry_hooks.events import (
    ALIAS_CREATED,
    ALIAS_DELETED,
    STAGE_TRANSITION,
    TAG_SET,
    VERSION_CREATED,
    RegistryEvent,
    route_event,
)
from registry_hooks.queue import JobQueue
from registry_hooks.service import on_sigterm, running_gate

log = logging.getLogger(__name__)

_PAGE_SIZE = 200  # model versions per registry request


def read_model_state(client, model: ModelGate) -> dict[str, Any]:
    """Return a model's aliases and, per version, its stage and tags (without the gate's own)."""
    registered = client.get_registered_model(model.name)
    versions: dict[str, dict[str, Any]] = {}
    page_token = None
    while True:
        page = client.search_model_versions(
            f"name = '{model.name}'", max_results=_PAGE_SIZE, page_token=page_token
        )
        for version in page:
            tags = {
                key: value
                for key, value in (version.tags or {}).items()
                if not key.startswith(OWN_TAG_PREFIX)
            }
            versions[str(version.version)] = {"stage": version.current_stage, "tags": tags}
        page_token = page.token
        if not page_token:
            break
    aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
    return {"aliases": aliases, "versions": versions}


def diff_states(model: str, old: dict[str, Any], new: dict[str, Any]) -> list[RegistryEvent]:
    """Return the events that turn snapshot `old` into `new`, in registry order."""
    events: list[RegistryEvent] = []
    old_versions = old["versions"]
    for version, state in sorted(new["versions"].items(), key=lambda item: int(item[0])):
        before = old_versions.get(version)
        if before is None:
            events.append(RegistryEvent(VERSION_CREATED, model, version, source="poll"))
            before = {"stage": "None", "tags": {}}
        for key, value in sorted(state["tags"].items()):
            if before["tags"].get(key) != value:
                events.append(
                    RegistryEvent(TAG_SET, model, version, key=key, value=value, source="poll")
                )
        if state["stage"] != before["stage"]:
            events.append(
                RegistryEvent(STAGE_TRANSITION, model, version, stage=state["stage"], source="poll")
            )
    for alias, version in sorted(new["aliases"].items()):
        if old["aliases"].get(alias) != version:
            events.append(RegistryEvent(ALIAS_CREATED, model, version, alias=alias, source="poll"))
    for alias in sorted(set(old["aliases"]) - set(new["aliases"])):
        events.append(RegistryEvent(ALIAS_DELETED, model, alias=alias, source="poll"))
    return events


def poll_registry(config: GateConfig, queue: JobQueue) -> int:
    """Poll every configured model once and queue what changed; return how many jobs were queued."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)
    queued = 0
    for model in config.models.values():
        try:
            state = read_model_state(client, model)
        except MlflowException as error:
            if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                log.info("model %r is not registered yet", model.name)
                continue
            raise
        with queue.transaction() as tx:
            before = tx.watch_snapshot(model.name)
            if before is None:
                for alias, version in state["aliases"].items():
                    tx.move_alias(model.name, alias, version)
                tx.save_watch_snapshot(model.name, state)
                log.info(
                    "model %r: first poll, %d versions and %d aliases recorded",
                    model.name, len(state["versions"]), len(state["aliases"]),
                )
                continue
            for event in diff_states(model.name, before, state):
                outcome = route_event(config, tx, event)
                log.info("%s: %s (%s)", event.describe(), outcome.status, outcome.reason)
                queued += outcome.status == "queued"
            tx.save_watch_snapshot(model.name, state)
    return queued


def watch(config: GateConfig, interval_s: float | None = None, once: bool = False) -> None:
    """Poll the registry every `interval_s` seconds and run the jobs, until SIGTERM or Ctrl+C.

    With `once`, poll one time, run the queued jobs and return.
    """
    if interval_s is not None and interval_s <= 0:
        raise ConfigError(f"--interval must be > 0 seconds, got {interval_s:g}")
    interval_s = interval_s or config.watch.interval_s
    if once:
        with running_gate(config, worker_thread=False) as (queue, worker):
            poll_registry(config, queue)
            count = worker.run_until_idle()
            log.info("ran %d job(s)", count)
        return

    stop = threading.Event()
    on_sigterm(stop.set)
    with running_gate(config) as (queue, worker):
        log.info(
            "polling %s every %.0f s for %s (queue %s)",
            config.tracking_uri, interval_s, ", ".join(config.models), queue.path,
        )
        failures = 0
        try:
            while not stop.is_set():
                try:
                    if poll_registry(config, queue):
                        worker.wake()
                    failures = 0
                except Exception as error:
                    failures += 1
                    log.warning(
                        "polling %s failed (%d time(s) in a row): %r",
                        config.tracking_uri, failures, error,
                    )
                stop.wait(interval_s)
        except KeyboardInterrupt:
            log.info("interrupted")
