"""The webhook receiver: signature checks, rejections, routing, and a burst of deliveries.

Deliveries are built and signed the way MLflow's `mlflow/webhooks/delivery.py` does, with its
own `_generate_hmac_signature`, and posted over HTTP to a receiver on 127.0.0.1.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from gate_support import (
    SECRET,
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
from registry_hooks.queue import JobQueue
from registry_hooks.receiver import GateHTTPServer
from registry_hooks.signature import signature_matches

MAX_BODY_BYTES = 4096
TRIGGERS = '{version_created: true, aliases: [staging, champion], tags: {ready: "true"}}'


def alias_body(alias: str = "staging", version: str = "1", model: str = "colour") -> bytes:
    return webhook_body(
        "model_version_alias.created", {"name": model, "alias": alias, "version": version}
    )


@pytest.fixture
def gate(tmp_path):
    """A receiver on a free 127.0.0.1 port with an empty queue and no worker."""
    path = write_gate_file(
        tmp_path,
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        write_gate_suite(tmp_path),
        TRIGGERS,
        receiver=f"{{host: 127.0.0.1, port: 0, max_body_bytes: {MAX_BODY_BYTES}}}",
    )
    config = load_gate_config(path)
    queue = JobQueue(config.queue_path)
    server = GateHTTPServer(config, queue, SECRET)
    server.start_in_thread()
    yield server
    server.shutdown()
    server.server_close()


def test_signature_matches_mlflow_signing():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = alias_body()
    delivery_id, timestamp = "5b1f0c3e-0000-4000-8000-000000000001", "1760000000"
    header = _generate_hmac_signature(SECRET, delivery_id, timestamp, body.decode())

    assert header.startswith("v1,")
    assert signature_matches(SECRET, delivery_id, timestamp, body, header)
    assert signature_matches(SECRET, delivery_id, timestamp, body, f"v1,AAAA {header}")
    assert not signature_matches(SECRET, delivery_id, timestamp, body + b" ", header)
    assert not signature_matches(SECRET, delivery_id, "1760000001", body, header)
    assert not signature_matches(SECRET + "x", delivery_id, timestamp, body, header)
    assert not signature_matches(SECRET, delivery_id, timestamp, body, header.replace("v1,", "v2,"))


def test_alias_delivery_queues_job(gate):
    body = alias_body()
    status, answer = post(gate.url, body, signed_headers(body))

    assert status == 202
    assert answer["status"] == "queued"
    jobs = gate.queue.jobs()
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.model, job.version, job.state) == ("colour", "1", "queued")
    assert job.suite == str(gate.config.models["colour"].suite)
    assert job.triggers == [
        {
            "event": "model_version_alias.created",
            "source": "webhook",
            "alias": "staging",
            "previous_version": None,
            "protected": False,
        }
    ]


def test_duplicate_delivery_merges(gate):
    body = alias_body()
    first = post(gate.url, body, signed_headers(body))
    tag = webhook_body(
        "model_version_tag.set", {"name": "colour", "version": "1", "key": "ready", "value": "true"}
    )
    second = post(gate.url, tag, signed_headers(tag))

    assert first[0] == second[0] == 202
    assert second[1]["status"] == "merged"
    assert second[1]["job_id"] == first[1]["job_id"]
    (job,) = gate.queue.jobs()
    assert [trigger["event"] for trigger in job.triggers] == [
        "model_version_alias.created",
        "model_version_tag.set",
    ]


def test_alias_holder_becomes_previous(gate):
    for version in ("1", "2"):
        body = alias_body("champion", version)
        post(gate.url, body, signed_headers(body))

    job = next(job for job in gate.queue.jobs() if job.version == "2")
    assert job.triggers[0]["previous_version"] == "1"
    assert job.triggers[0]["protected"] is True
    assert gate.queue.alias_holder("colour", "champion") == "2"


def _forged(body):
    return signed_headers(body, secret="another-secret-0123456789")


def _unsigned(body):
    headers = signed_headers(body)
    del headers["X-MLflow-Signature"]
    return headers


def _no_timestamp(body):
    headers = signed_headers(body)
    del headers["X-MLflow-Timestamp"]
    return headers


REJECTIONS = [
    ("forged signature", alias_body(), _forged, 401, "signature does not match"),
    ("missing signature", alias_body(), _unsigned, 401, "missing X-MLflow-Signature header"),
    (
        "stale timestamp",
        alias_body(),
        lambda body: signed_headers(body, timestamp=int(time.time()) - 301),
        401,
        "stale delivery",
    ),
    (
        "future timestamp",
        alias_body(),
        lambda body: signed_headers(body, timestamp=int(time.time()) + 400),
        401,
        "stale delivery",
    ),
    ("missing timestamp", alias_body(), _no_timestamp, 400, "missing X-MLflow-Timestamp header"),
    (
        "oversized body",
        webhook_body("model_version.created", {"name": "colour", "version": "1", "description": "x" * MAX_BODY_BYTES}),
        signed_headers,
        413,
        "exceeds the 4096-byte limit",
    ),
    ("malformed JSON", b'{"entity": "model_version", "action": ', signed_headers, 400, "malformed JSON"),
    ("JSON array", b"[1, 2]", signed_headers, 400, "must be a JSON object"),
    (
        "unknown event",
        webhook_body("model_version.exploded", {"name": "colour", "version": "1"}),
        signed_headers,
        422,
        "unknown event 'model_version.exploded'",
    ),
    (
        "missing payload field",
        webhook_body("model_version_alias.created", {"name": "colour", "alias": "staging"}),
        signed_headers,
        422,
        "lacks string field(s): version",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "make_headers", "status", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS]
)
def test_rejected_delivery(gate, caplog, case, body, make_headers, status, reason):
    headers = make_headers(body)
    with caplog.at_level(logging.WARNING, logger="registry_hooks.receiver"):
        answer_status, answer = post(gate.url, body, headers)

    assert answer_status == status, answer
    assert answer["status"] == "rejected"
    assert reason in answer["reason"]
    logged = [r.getMessage() for r in caplog.records if r.name == "registry_hooks.receiver"]
    assert any(f"HTTP {status}" in line and reason in line for line in logged), logged
    assert gate.queue.jobs() == []
    assert gate.queue.delivery_count() == 0


def test_wrong_path_rejected(gate):
    body = alias_body()
    status, answer = post(gate.url.replace("/webhook", "/other"), body, signed_headers(body))
    assert status == 404
    assert gate.queue.jobs() == []


def test_replayed_delivery_rejected(gate, caplog):
    body = alias_body()
    headers = signed_headers(body)
    first_status, _ = post(gate.url, body, headers)
    with caplog.at_level(logging.WARNING, logger="registry_hooks.receiver"):
        replay_status, answer = post(gate.url, body, headers)

    assert first_status == 202
    assert replay_status == 409
    assert "replayed delivery id" in answer["reason"]
    assert any("HTTP 409" in r.getMessage() for r in caplog.records)
    assert len(gate.queue.jobs()) == 1
    assert gate.queue.delivery_count() == 1


@pytest.mark.parametrize(
    ("case", "event", "data", "reason"),
    [
        (
            "own tag",
            "model_version_tag.set",
            {"name": "colour", "version": "1", "key": "latentgate.verdict", "value": "pass"},
            "is one the gate writes itself",
        ),
        ("other model", "model_version.created", {"name": "other", "version": "3"}, "not in gate.yaml"),
        (
            "untriggered alias",
            "model_version_alias.created",
            {"name": "colour", "alias": "archive", "version": "1"},
            "no trigger",
        ),
        (
            "tag value differs",
            "model_version_tag.set",
            {"name": "colour", "version": "1", "key": "ready", "value": "false"},
            "no trigger",
        ),
        (
            "MLflow test delivery",
            "model_version.created",
            {"name": "example_model", "version": "1", "source": "models:/123", "run_id": "abcd",
             "tags": {"example_key": "example_value"}, "description": "An example model version"},
            "not in gate.yaml",
        ),
        (
            "prompt event",
            "prompt.created",
            {"name": "example_prompt", "tags": {}, "description": None},
            "does not act on prompt.created",
        ),
    ],
)
def test_ignored_delivery(gate, case, event, data, reason):
    body = webhook_body(event, data)
    status, answer = post(gate.url, body, signed_headers(body))

    assert status == 200, answer
    assert answer["status"] == "ignored"
    assert reason in answer["reason"]
    assert gate.queue.jobs() == []
    assert gate.queue.delivery_count() == 1


def test_own_alias_rollback_ignored_once(gate):
    gate.queue.record_alias_rollback("colour", "champion", "1")
    body = alias_body("champion", "1")
    status, answer = post(gate.url, body, signed_headers(body))
    assert status == 200
    assert "the gate itself moved alias 'champion'" in answer["reason"]
    assert gate.queue.jobs() == []

    # A later, human move to the same version is a new event and triggers.
    status, answer = post(gate.url, body, signed_headers(body))
    assert status == 202
    assert answer["status"] == "queued"


def test_healthz(gate):
    import json
    import urllib.request

    with urllib.request.urlopen(gate.url.replace("/webhook", "/healthz"), timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "ok"
    assert answer["queued"] == 0


@pytest.mark.slow
def test_burst_loses_no_job_and_runs_each_once(tmp_path, tmp_path_factory):
    """200 deliveries for 4 versions, with merged duplicates and exact replays."""
    from mlflow.tracking import MlflowClient

    from registry_hooks.worker import GateWorker

    good = saved_toy_models(tmp_path_factory)["good"]
    uri = make_registry(tmp_path, [good] * 4)
    config = load_gate_config(write_gate_file(tmp_path, uri, write_gate_suite(tmp_path), TRIGGERS))
    queue = JobQueue(config.queue_path)
    server = GateHTTPServer(config, queue, SECRET)
    server.start_in_thread()

    deliveries = []
    for index in range(180):
        version = str(index % 4 + 1)
        kind = index % 3
        if kind == 0:
            body = alias_body("staging", version)
        elif kind == 1:
            body = webhook_body(
                "model_version_tag.set",
                {"name": "colour", "version": version, "key": "ready", "value": "true"},
            )
        else:
            body = webhook_body("model_version.created", {"name": "colour", "version": version})
        deliveries.append((body, signed_headers(body, delivery_id=str(uuid.uuid4()))))
    replays = deliveries[:20]  # the same delivery id sent a second time
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda d: post(server.url, *d), deliveries + replays))
    finally:
        server.shutdown()
        server.server_close()

    statuses = [status for status, _ in answers]
    assert len(statuses) == 200
    assert statuses.count(202) == 180, sorted(set(statuses))
    assert statuses.count(409) == 20
    assert queue.delivery_count() == 180
    jobs = queue.jobs()
    assert sorted(job.version for job in jobs) == ["1", "2", "3", "4"]
    for job in jobs:
        assert {t["event"] for t in job.triggers} == {
            "model_version_alias.created",
            "model_version_tag.set",
            "model_version.created",
        }

    assert GateWorker(config, queue).run_until_idle() == 4

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("latentgate")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(run.info.run_name for run in runs) == [f"colour-v{v}-colours" for v in "1234"]
    assert all(run.info.status == "FINISHED" for run in runs)
    for version in "1234":
        tags = version_tags(uri, version)
        assert tags["latentgate.verdict"] == "pass"
        assert set(tags["latentgate.trigger"].split("; ")) == {
            "model_version_alias.created alias=staging",
            "model_version_tag.set key=ready value=true",
            "model_version.created",
        }
    assert queue.count("done") == 4
