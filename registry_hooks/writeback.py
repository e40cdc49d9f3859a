"""Registry writes after a job: tags, alias roll-backs, and the clean-up of interrupted runs.

The main job already tags the version with `latentgate.verdict`, `.run_id`, `.suite` and
`.failed`. The gate adds `latentgate.trigger` (the events that queued the job) and
`latentgate.error` (the reason for an `error` verdict; removed after a pass or fail verdict). When a protected
alias triggered the job and the verdict is not pass, `latentgate.alias_rollback` records where
the alias went and why.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from harness.errors import LatentGateError
from harness.evaluation import evaluation_run_name
from harness.tracking import TAG_FAILED, TAG_RUN_ID, TAG_SUITE, TAG_VERDICT, tag_model_version
from harness.tracking.mlflow_run import experiment_name
from registry_hooks.queue import Job, JobQueue

log = logging.getLogger(__name__)

TAG_TRIGGER = "latentgate.trigger"
TAG_ERROR = "latentgate.error"
TAG_ALIAS_ROLLBACK = "latentgate.alias_rollback"
# MLflow's run start times come from the client clock, as does a job's start; the margin covers
# rounding to milliseconds.
_START_MARGIN_MS = 1000


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def describe_triggers(triggers: list[dict[str, Any]]) -> str:
    """Return the `latentgate.trigger` value: each distinct event with its alias, tag or stage."""
    described: list[str] = []
    for trigger in triggers:
        parts = [trigger["event"]]
        for field in ("alias", "key", "value", "stage"):
            if trigger.get(field) is not None:
                parts.append(f"{field}={trigger[field]}")
        if trigger.get("source") == "poll":
            parts.append("(poll)")
        text = " ".join(parts)
        if text not in described:
            described.append(text)
    return "; ".join(described)


def suite_name(suite_path: str) -> str:
    """Return the suite's `name`, or the file stem when the suite can no longer be read."""
    from harness.suite import load_suite

    try:
        return load_suite(suite_path, check_paths=False).name
    except LatentGateError:
        return Path(suite_path).stem


def find_job_runs(tracking_uri: str, job: Job, running_only: bool = False) -> list:
    """Return the MLflow runs this job's evaluation started, newest first.

    An evaluation names its run with `evaluation_run_name`. One gate process runs one job at a
    time, so a run of that name that started after the job did belongs to the job.
    """
    if job.started_at is None:
        return []
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name())
    if experiment is None:
        return []
    name = evaluation_run_name(job.model, job.version, suite_name(job.suite))
    since_ms = int(job.started_at * 1000) - _START_MARGIN_MS
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.start_time >= {since_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )
    return [
        run
        for run in runs
        if run.info.run_name == name and (not running_only or run.info.status == "RUNNING")
    ]


def write_job_tags(
    tracking_uri: str,
    job: Job,
    triggers: list[dict[str, Any]],
    error: str,
    run_id: str | None = None,
    replace_verdict: bool = False,
) -> None:
    """Tag the version with the trigger and, for an error verdict, the `error` message.

    An empty `error` removes the version's `latentgate.error` tag, so that an error of an
    earlier evaluation does not stay next to a newer pass or fail verdict.

    With `replace_verdict`, for a job whose evaluate() raised, the verdict tags are written as
    well: `error`, the run it started (if any) and the suite name. When evaluate() returned, it
    has written them already.
    """
    tags = {TAG_TRIGGER: describe_triggers(triggers)}
    if error:
        tags[TAG_ERROR] = error
    else:
        _delete_version_tag(tracking_uri, job, TAG_ERROR)
    if replace_verdict:
        tags.update(
            {
                TAG_VERDICT: "error",
                TAG_RUN_ID: run_id or "",
                TAG_SUITE: suite_name(job.suite),
                TAG_FAILED: "",
            }
        )
    tag_model_version(tracking_uri, job.model, job.version, tags)


def _delete_version_tag(tracking_uri: str, job: Job, key: str) -> None:
    client = _client(tracking_uri)
    tags = client.get_model_version(job.model, str(job.version)).tags or {}
    if key in tags:
        client.delete_model_version_tag(job.model, str(job.version), key)


def mark_interrupted(tracking_uri: str, job: Job) -> None:
    """Tag an interrupted job's version `error` and end its orphaned MLflow runs FAILED.

    The process died while the job ran, so the verdict on the version, if any, is from an
    earlier evaluation or from a run whose result the gate never wrote back.
    """
    message = (
        f"the gate stopped while evaluating this version (job {job.id}, attempt {job.attempts}); "
        "the verdict is unknown until the job runs again"
    )
    client = _client(tracking_uri)
    runs = find_job_runs(tracking_uri, job, running_only=True)
    for run in runs:
        client.set_tag(run.info.run_id, TAG_ERROR, message)
        client.set_tag(run.info.run_id, TAG_VERDICT, "error")
        client.set_terminated(run.info.run_id, status="FAILED")
        log.warning("ended MLflow run %s of interrupted job %d FAILED", run.info.run_id, job.id)
    tags = {
        TAG_VERDICT: "error",
        TAG_RUN_ID: runs[0].info.run_id if runs else "",
        TAG_SUITE: suite_name(job.suite),
        TAG_FAILED: "",
        TAG_ERROR: message,
        TAG_TRIGGER: describe_triggers(job.triggers),
    }
    tag_model_version(tracking_uri, job.model, job.version, tags)


def _version_exists(client, model: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(model, version)
    except MlflowException as error:
        if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def roll_back_aliases(
    tracking_uri: str, queue: JobQueue, job: Job, triggers: list[dict[str, Any]], verdict: str,
    run_id: str | None,
) -> list[str]:
    """Move each protected alias that triggered this job back to its previous holder.

    An alias with no previous holder (or whose previous holder was deleted) is removed. An
    alias that no longer points at this version was moved by someone else after the event,
    so it is left alone. Returns one note per alias, for `tag_alias_rollback`.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    notes: list[str] = []
    handled: set[str] = set()
    run_text = f"run {run_id}" if run_id else "no finished run"
    for trigger in triggers:
        alias = trigger.get("alias")
        if not trigger.get("protected") or alias in handled:
            continue
        handled.add(alias)
        try:
            holder = client.get_registered_model(job.model).aliases.get(alias)
            current = None if holder is None else str(holder)  # MLflow returns an int version
            if current != job.version:
                notes.append(
                    f"alias {alias!r} left alone: it points at version {current} now, not at "
                    f"version {job.version}"
                )
                continue
            previous = trigger.get("previous_version")
            if previous == job.version or (
                previous is not None and not _version_exists(client, job.model, previous)
            ):
                previous = None
            # Recorded before the write, because MLflow's event for it can arrive before the
            # call returns. NOTE: a failed write leaves the record until it expires.
            queue.record_alias_rollback(job.model, alias, previous)
            if previous is not None:
                client.set_registered_model_alias(job.model, alias, previous)
                note = (
                    f"alias {alias!r} moved back from version {job.version} to version "
                    f"{previous}: verdict {verdict} ({run_text})"
                )
            else:
                client.delete_registered_model_alias(job.model, alias)
                note = (
                    f"alias {alias!r} removed from version {job.version}: verdict {verdict} "
                    f"({run_text}), and no earlier version held it"
                )
            log.warning("%s %s", job.model, note)
        except MlflowException as error:
            note = f"alias {alias!r} could not be moved back: {error.message}"
            log.error("%s version %s: %s", job.model, job.version, note)
        notes.append(note)
    return notes


def tag_alias_rollback(tracking_uri: str, job: Job, notes: list[str]) -> None:
    """Write the roll-back notes, with the time in UTC, as `latentgate.alias_rollback`."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tag_model_version(
        tracking_uri, job.model, job.version, {TAG_ALIAS_ROLLBACK: f"{stamp} " + "; ".join(notes)}
    )
