"""Polling fallback: snapshot differences become the same events, jobs and roll-backs."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
from gate_support import (
    aliases,
    cli_env,
    saved_toy_models,
    make_registry,
    version_tags,
    write_gate_file,
    write_gate_suite,
)

from registry_hooks.config import load_gate_config
from registry_hooks.events import RegistryEvent
from registry_hooks.queue import JobQueue
from registry_hooks.watch import diff_states, poll_registry
from registry_hooks.worker import GateWorker

TRIGGERS = '{aliases: [staging, champion], tags: {ready: "true"}, stages: [Production]}'


def test_diff_states_known_answer():
    old = {
        "aliases": {"champion": "1", "old": "1"},
        "versions": {"1": {"stage": "None", "tags": {"ready": "false"}}},
    }
    new = {
        "aliases": {"champion": "2", "staging": "1"},
        "versions": {
            "1": {"stage": "Production", "tags": {"ready": "true"}},
            "2": {"stage": "None", "tags": {"owner": "ana"}},
        },
    }
    events = diff_states("colour", old, new)
    assert events == [
        RegistryEvent("model_version_tag.set", "colour", "1", key="ready", value="true", source="poll"),
        RegistryEvent("stage_transition", "colour", "1", stage="Production", source="poll"),
        RegistryEvent("model_version.created", "colour", "2", source="poll"),
        RegistryEvent("model_version_tag.set", "colour", "2", key="owner", value="ana", source="poll"),
        RegistryEvent("model_version_alias.created", "colour", "2", alias="champion", source="poll"),
        RegistryEvent("model_version_alias.created", "colour", "1", alias="staging", source="poll"),
        RegistryEvent("model_version_alias.deleted", "colour", None, alias="old", source="poll"),
    ]
    assert diff_states("colour", new, new) == []


@pytest.mark.slow
def test_watch_triggers_and_rolls_back(tmp_path, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    models = saved_toy_models(tmp_path_factory)
    uri = make_registry(tmp_path, [models["good"], models["bad"]])
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_registered_model_alias("colour", "champion", "1")
    config = load_gate_config(write_gate_file(tmp_path, uri, write_gate_suite(tmp_path), TRIGGERS))
    queue = JobQueue(config.queue_path)

    assert poll_registry(config, queue) == 0  # the first poll records a snapshot
    assert queue.alias_holder("colour", "champion") == "1"

    client.set_registered_model_alias("colour", "staging", "1")
    client.set_model_version_tag("colour", "1", "ready", "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated in MLflow 3
        client.transition_model_version_stage("colour", "1", "Production")
    client.set_registered_model_alias("colour", "champion", "2")
    assert poll_registry(config, queue) == 2

    jobs = {job.version: job for job in queue.jobs()}
    assert sorted(jobs) == ["1", "2"]
    assert {t["event"] for t in jobs["1"].triggers} == {
        "model_version_alias.created",
        "model_version_tag.set",
        "stage_transition",
    }
    assert jobs["2"].triggers[0]["previous_version"] == "1"

    assert GateWorker(config, queue).run_until_idle() == 2

    tags = version_tags(uri, "1")
    assert tags["latentgate.verdict"] == "pass"
    assert set(tags["latentgate.trigger"].split("; ")) == {
        "model_version_alias.created alias=staging (poll)",
        "model_version_tag.set key=ready value=true (poll)",
        "stage_transition stage=Production (poll)",
    }
    assert version_tags(uri, "2")["latentgate.verdict"] == "fail"
    assert aliases(uri) == {"champion": "1", "staging": "1"}

    # The next poll finds only the gate's own roll-back and tags, so it queues nothing.
    assert poll_registry(config, queue) == 0
    assert queue.count("queued", "running") == 0
    assert len(queue.jobs()) == 2


def test_cli_watch_once(tmp_path, tmp_path_factory):
    models = saved_toy_models(tmp_path_factory)
    uri = make_registry(tmp_path, [models["good"]])
    path = write_gate_file(tmp_path, uri, write_gate_suite(tmp_path), TRIGGERS)

    completed = subprocess.run(
        [sys.executable, "-m", "harness.cli", "gate", "watch", "--config", str(path), "--once"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "model 'colour': first poll, 1 versions and 0 aliases recorded" in completed.stderr
    assert "ran 0 job(s)" in completed.stderr
