"""The worker: write-back, protected-alias roll-back, and recovery after the process dies.

Each test has its own sqlite registry with toy versions (`good` passes the toy suite, `bad`
fails it), and runs the real main job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from gate_support import (
    aliases,
    cli_env,
    free_port,
    saved_toy_models,
    make_registry,
    post,
    signed_headers,
    version_tags,
    webhook_body,
    write_gate_file,
    write_gate_suite,
)

from registry_hooks.config import load_gate_config
from registry_hooks.events import ALIAS_CREATED, RegistryEvent, route_event
from registry_hooks.queue import JobQueue
from registry_hooks.service import observe_registry_aliases
from registry_hooks.worker import GateWorker

TRIGGERS = "{aliases: [staging, champion]}"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return saved_toy_models(tmp_path_factory)


def make_gate(tmp_path, sources, extra_yaml=""):
    """Return (config, queue, registry URI) for model `colour` with versions from `sources`."""
    uri = make_registry(tmp_path, sources)
    path = write_gate_file(tmp_path, uri, write_gate_suite(tmp_path), TRIGGERS)
    if extra_yaml:
        path.write_text(path.read_text() + extra_yaml)
    config = load_gate_config(path)
    return config, JobQueue(config.queue_path), uri


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def deliver_alias(config, queue, alias, version):
    """Route an alias event as the receiver does after verifying a delivery."""
    with queue.transaction() as tx:
        return route_event(config, tx, RegistryEvent(ALIAS_CREATED, "colour", version, alias=alias))


def runs_by_name(uri):
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name("latentgate")
    runs = mlflow_client.search_runs([experiment.experiment_id], max_results=100)
    return {run.info.run_id: run for run in runs}


def test_failing_version_loses_protected_alias(tmp_path, models):
    config, queue, uri = make_gate(tmp_path, [models["good"], models["bad"]])
    client(uri).set_registered_model_alias("colour", "champion", "1")
    observe_registry_aliases(config, queue)

    client(uri).set_registered_model_alias("colour", "champion", "2")
    assert deliver_alias(config, queue, "champion", "2").status == "queued"
    assert GateWorker(config, queue).run_until_idle() == 1

    assert aliases(uri) == {"champion": "1"}
    tags = version_tags(uri, "2")
    assert tags["latentgate.verdict"] == "fail"
    assert tags["latentgate.failed"] == "red.target_prob_gain"
    assert tags["latentgate.trigger"] == "model_version_alias.created alias=champion"
    assert "latentgate.error" not in tags
    rollback = tags["latentgate.alias_rollback"]
    assert "alias 'champion' moved back from version 2 to version 1: verdict fail" in rollback
    assert tags["latentgate.run_id"] in rollback
    (job,) = queue.jobs()
    assert (job.state, job.verdict, job.run_id) == ("done", "fail", tags["latentgate.run_id"])

    # MLflow's event for the roll-back is the gate's own write: it queues nothing.
    outcome = deliver_alias(config, queue, "champion", "1")
    assert outcome.status == "ignored"
    assert "the gate itself moved alias 'champion'" in outcome.reason
    assert queue.count("queued") == 0


def test_pass_removes_error_tag_of_earlier_evaluation(tmp_path, models):
    config, queue, uri = make_gate(tmp_path, [models["good"]])
    client(uri).set_model_version_tag("colour", "1", "latentgate.error", "suite file not found")
    client(uri).set_registered_model_alias("colour", "staging", "1")
    deliver_alias(config, queue, "staging", "1")

    assert GateWorker(config, queue).run_until_idle() == 1

    tags = version_tags(uri, "1")
    assert tags["latentgate.verdict"] == "pass"
    assert "latentgate.error" not in tags


def test_unreachable_server_logged_once(tmp_path, caplog):
    port = free_port()  # nothing listens there
    uri = f"http://127.0.0.1:{port}"
    config = load_gate_config(write_gate_file(tmp_path, uri, write_gate_suite(tmp_path), TRIGGERS))
    queue = JobQueue(config.queue_path)

    with caplog.at_level("WARNING", logger="registry_hooks.service"):
        observe_registry_aliases(config, queue)

    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        f"the MLflow server at {uri} is not reachable; the gate starts anyway, and roll-backs "
        "use the aliases that events report. Start the server or fix tracking_uri."
    ]
    assert queue.alias_holder("colour", "champion") is None


def test_alias_without_previous_holder_removed(tmp_path, models):
    config, queue, uri = make_gate(tmp_path, [models["bad"]])
    observe_registry_aliases(config, queue)

    client(uri).set_registered_model_alias("colour", "champion", "1")
    deliver_alias(config, queue, "champion", "1")
    GateWorker(config, queue).run_until_idle()

    assert aliases(uri) == {}
    rollback = version_tags(uri, "1")["latentgate.alias_rollback"]
    assert "alias 'champion' removed from version 1: verdict fail" in rollback
    assert "no earlier version held it" in rollback
    assert queue.alias_holder("colour", "champion") is None


def test_alias_moved_meanwhile_left_alone(tmp_path, models):
    config, queue, uri = make_gate(tmp_path, [models["good"], models["bad"], models["good"]])
    client(uri).set_registered_model_alias("colour", "champion", "1")
    observe_registry_aliases(config, queue)
    client(uri).set_registered_model_alias("colour", "champion", "2")
    deliver_alias(config, queue, "champion", "2")
    client(uri).set_registered_model_alias("colour", "champion", "3")  # before the job runs

    GateWorker(config, queue).run_until_idle()

    assert aliases(uri) == {"champion": "3"}
    tags = version_tags(uri, "2")
    assert tags["latentgate.verdict"] == "fail"
    assert "alias 'champion' left alone: it points at version 3 now" in tags["latentgate.alias_rollback"]


def test_staging_pass_keeps_alias(tmp_path, models):
    config, queue, uri = make_gate(tmp_path, [models["good"]])
    client(uri).set_registered_model_alias("colour", "staging", "1")
    deliver_alias(config, queue, "staging", "1")

    GateWorker(config, queue).run_until_idle()

    tags = version_tags(uri, "1")
    assert tags["latentgate.verdict"] == "pass"
    assert tags["latentgate.suite"] == "colours"
    assert tags["latentgate.trigger"] == "model_version_alias.created alias=staging"
    assert "latentgate.alias_rollback" not in tags
    assert runs_by_name(uri)[tags["latentgate.run_id"]].info.status == "FINISHED"
    assert aliases(uri) == {"staging": "1"}


def test_missing_suite_tags_error(tmp_path, models):
    config, queue, uri = make_gate(tmp_path, [models["bad"]])
    client(uri).set_registered_model_alias("colour", "champion", "1")
    deliver_alias(config, queue, "champion", "1")
    (tmp_path / "suite.yaml").unlink()  # the suite disappears after the job was queued

    GateWorker(config, queue).run_until_idle()

    tags = version_tags(uri, "1")
    assert tags["latentgate.verdict"] == "error"
    assert "suite file not found" in tags["latentgate.error"]
    assert tags["latentgate.run_id"] == ""
    assert aliases(uri) == {}  # an error is not a pass, so the protected alias goes
    (job,) = queue.jobs()
    assert job.state == "error"


def simulate_death_after_pass_tag(config, queue, uri):
    """Claim a job and leave an unfinished run of it, with the version tagged `pass`.

    evaluate() ends its run before it tags the version, so this is the worst state a killed job
    can leave, next to a `pass` from an earlier evaluation.
    """
    from harness.evaluation import evaluation_run_name

    job = queue.claim()
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name("latentgate")
    run = mlflow_client.create_run(
        experiment.experiment_id, run_name=evaluation_run_name("colour", job.version, "colours")
    )
    for key, value in {
        "latentgate.verdict": "pass",
        "latentgate.run_id": run.info.run_id,
        "latentgate.suite": "colours",
        "latentgate.failed": "",
    }.items():
        mlflow_client.set_model_version_tag("colour", job.version, key, value)
    return job, run.info.run_id


def test_interrupted_job_gives_up_after_max_attempts(tmp_path, models):
    config, queue, uri = make_gate(
        tmp_path, [models["good"], models["good"]], extra_yaml="worker: {max_attempts: 1}\n"
    )
    client(uri).set_registered_model_alias("colour", "champion", "1")
    observe_registry_aliases(config, queue)
    client(uri).set_registered_model_alias("colour", "champion", "2")
    deliver_alias(config, queue, "champion", "2")
    job, orphan_run = simulate_death_after_pass_tag(config, queue, uri)

    restarted = JobQueue(config.queue_path)
    assert [j.id for j in restarted.recover_interrupted()] == [job.id]
    GateWorker(config, restarted).run_until_idle()

    tags = version_tags(uri, "2")
    assert tags["latentgate.verdict"] == "error"
    assert tags["latentgate.run_id"] == orphan_run
    assert "gave up after 1 attempt(s)" in tags["latentgate.error"]
    orphan = runs_by_name(uri)[orphan_run]
    assert orphan.info.status == "FAILED"
    assert orphan.data.tags["latentgate.verdict"] == "error"
    assert aliases(uri) == {"champion": "1"}
    assert restarted.job(job.id).state == "error"


def test_interrupted_job_reruns(tmp_path, models):
    config, queue, uri = make_gate(tmp_path, [models["good"]])
    deliver_alias(config, queue, "staging", "1")
    job, orphan_run = simulate_death_after_pass_tag(config, queue, uri)

    restarted = JobQueue(config.queue_path)
    restarted.recover_interrupted()
    worker = GateWorker(config, restarted)
    assert worker.run_until_idle() == 1

    tags = version_tags(uri, "1")
    runs = runs_by_name(uri)
    assert tags["latentgate.verdict"] == "pass"
    assert tags["latentgate.run_id"] != orphan_run
    assert runs[tags["latentgate.run_id"]].info.status == "FINISHED"
    assert runs[orphan_run].info.status == "FAILED"
    finished = restarted.job(job.id)
    assert (finished.state, finished.attempts) == ("done", 2)


def wait_until(predicate, timeout_s, interval_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def start_serve(config_path, log):
    """Start `latentgate gate serve`, writing its output to the file `log` (a pipe could fill)."""
    with open(log, "w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "gate", "serve", "--config", str(config_path)],
            cwd=log.parent,
            env=cli_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def healthy(url):
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def check_no_unproven_pass(uri, version):
    """Fail if the version is tagged pass while its run is not FINISHED."""
    tags = version_tags(uri, version)
    if tags.get("latentgate.verdict") == "pass":
        run = runs_by_name(uri).get(tags["latentgate.run_id"])
        assert run is not None and run.info.status == "FINISHED", tags
    return tags


@pytest.mark.slow
def test_killed_service_never_leaves_unproven_pass(tmp_path, models):
    uri = make_registry(tmp_path, [models["good"]])
    port = free_port()
    config_path = write_gate_file(
        tmp_path, uri, write_gate_suite(tmp_path), TRIGGERS,
        receiver=f"{{host: 127.0.0.1, port: {port}, path: /webhook}}",
    )
    url = f"http://127.0.0.1:{port}/webhook"
    health = f"http://127.0.0.1:{port}/healthz"
    queue = JobQueue(tmp_path / "queue.db")

    service = start_serve(config_path, tmp_path / "first.log")
    try:
        wait_until(lambda: healthy(health), 300)
        body = webhook_body(
            "model_version_alias.created", {"name": "colour", "alias": "staging", "version": "1"}
        )
        status, _ = post(url, body, signed_headers(body))
        assert status == 202

        # Kill the process while the MLflow run of the job exists and has not ended.
        wait_until(
            lambda: any(run.info.status == "RUNNING" for run in runs_by_name(uri).values()), 300, 0.05
        )
        os.kill(service.pid, signal.SIGKILL)
        service.wait(30)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(30)
    (killed_job,) = queue.jobs()
    assert killed_job.state == "running"
    check_no_unproven_pass(uri, "1")

    log = tmp_path / "restarted.log"
    restarted = start_serve(config_path, log)
    try:
        wait_until(lambda: healthy(health), 300)

        def job_finished():
            check_no_unproven_pass(uri, "1")
            return queue.job(killed_job.id).state in ("done", "error")

        wait_until(job_finished, 300, 0.2)
    finally:
        restarted.send_signal(signal.SIGTERM)
        try:
            restarted.wait(timeout=60)
        except subprocess.TimeoutExpired:
            restarted.kill()
            restarted.wait()
    output = log.read_text()
    assert restarted.returncode == 0, output[-3000:]
    assert "was running when the gate stopped; re-queued" in output

    tags = check_no_unproven_pass(uri, "1")
    assert tags["latentgate.verdict"] == "pass"
    job = queue.job(killed_job.id)
    assert (job.state, job.attempts) == ("done", 2)
    statuses = sorted(run.info.status for run in runs_by_name(uri).values())
    assert statuses == ["FAILED", "FINISHED"]
