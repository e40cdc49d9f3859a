"""The SQLite job queue: merging, state changes, recovery, alias holders and the lock."""

from __future__ import annotations

import sqlite3

import pytest

from harness.errors import ConfigError
from registry_hooks.queue import DeliveryReplayed, JobQueue, format_jobs

ALIAS = {"event": "model_version_alias.created", "alias": "staging"}
TAG = {"event": "model_version_tag.set", "key": "ready", "value": "true"}


def test_pending_job_merges_triggers(tmp_path):
    queue = JobQueue(tmp_path / "queue.db")
    with queue.transaction() as tx:
        first = tx.enqueue("colour", "1", "/s.yaml", ALIAS)
        again = tx.enqueue("colour", "1", "/s.yaml", ALIAS)
        other = tx.enqueue("colour", "1", "/s.yaml", TAG)
        second_suite = tx.enqueue("colour", "1", "/t.yaml", ALIAS)

    assert first == (1, False)
    assert again == (1, True)
    assert other == (1, True)
    assert second_suite == (2, False)
    assert queue.job(1).triggers == [ALIAS, TAG]


def test_running_job_merges_finished_does_not(tmp_path):
    queue = JobQueue(tmp_path / "queue.db")
    with queue.transaction() as tx:
        tx.enqueue("colour", "1", "/s.yaml", ALIAS)
    job = queue.claim()
    assert (job.state, job.attempts) == ("running", 1)
    with queue.transaction() as tx:
        assert tx.enqueue("colour", "1", "/s.yaml", TAG) == (1, True)

    # A trigger that arrived after the writer read one trigger: finish refuses, then accepts.
    assert queue.finish(1, "done", "pass", "run-1", "", handled_triggers=1) is False
    assert queue.job(1).state == "running"
    assert queue.finish(1, "done", "pass", "run-1", "", handled_triggers=2) is True
    assert queue.job(1).state == "done"

    with queue.transaction() as tx:
        assert tx.enqueue("colour", "1", "/s.yaml", ALIAS) == (2, False)


def test_unique_index_rejects_second_pending_row(tmp_path):
    queue = JobQueue(tmp_path / "queue.db")
    with queue.transaction() as tx:
        tx.enqueue("colour", "1", "/s.yaml", ALIAS)
    with pytest.raises(sqlite3.IntegrityError):
        with queue.transaction() as tx:
            tx.connection.execute(
                "INSERT INTO jobs (model, version, suite, state, triggers, created_at) "
                "VALUES ('colour', '1', '/s.yaml', 'queued', '[]', 0)"
            )


def test_recover_interrupted(tmp_path):
    queue = JobQueue(tmp_path / "queue.db")
    with queue.transaction() as tx:
        tx.enqueue("colour", "1", "/s.yaml", ALIAS)
        tx.enqueue("colour", "2", "/s.yaml", ALIAS)
    claimed = queue.claim()

    restarted = JobQueue(tmp_path / "queue.db")
    assert [job.id for job in restarted.recover_interrupted()] == [claimed.id]
    assert [job.id for job in restarted.interrupted()] == [claimed.id]
    # An interrupted job waits for its clean-up; the other queued job may run meanwhile.
    assert restarted.claim().id == 2
    restarted.clear_interrupted(claimed.id)
    again = restarted.claim()
    assert (again.id, again.attempts) == (claimed.id, 2)


def test_replayed_delivery_id(tmp_path):
    queue = JobQueue(tmp_path / "queue.db")
    with queue.transaction() as tx:
        tx.remember_delivery("d-1", "model_version.created")
    with pytest.raises(DeliveryReplayed):
        with queue.transaction() as tx:
            tx.remember_delivery("d-1", "model_version.created")
    assert queue.delivery_count() == 1
    assert queue.prune_deliveries(older_than_s=3600) == 0
    assert queue.prune_deliveries(older_than_s=-1) == 1


def test_alias_holders(tmp_path):
    queue = JobQueue(tmp_path / "queue.db")
    with queue.transaction() as tx:
        assert tx.move_alias("colour", "champion", "1") is None
        assert tx.move_alias("colour", "champion", "2") == "1"
        assert tx.move_alias("colour", "champion", "2") == "1"  # set again: same previous
        assert tx.move_alias("colour", "champion", None) == "2"  # deleted
        assert tx.move_alias("colour", "champion", "3") is None
    assert queue.alias_holder("colour", "champion") == "3"

    queue.record_alias_rollback("colour", "champion", "1")
    assert queue.alias_holder("colour", "champion") == "1"
    with queue.transaction() as tx:
        assert tx.consume_own_alias_write("colour", "champion", "2") is False
        assert tx.consume_own_alias_write("colour", "champion", "1") is True
        assert tx.consume_own_alias_write("colour", "champion", "1") is False
        assert tx.move_alias("colour", "champion", "1") is None


def test_second_process_lock_rejected(tmp_path):
    queue = JobQueue(tmp_path / "queue.db")
    lock = queue.lock()
    try:
        with pytest.raises(ConfigError, match=r"is in use by another `latentgate gate` process"):
            JobQueue(tmp_path / "queue.db").lock()
    finally:
        lock.release()
    JobQueue(tmp_path / "queue.db").lock().release()


def test_newer_schema_rejected(tmp_path):
    path = tmp_path / "queue.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 7")
    with pytest.raises(ConfigError, match="has schema version 7, but this LatentGate reads version 1"):
        JobQueue(path)


def test_format_jobs(tmp_path):
    queue = JobQueue(tmp_path / "queue.db")
    with queue.transaction() as tx:
        tx.enqueue("colour", "3", "/s.yaml", ALIAS)
        tx.enqueue("colour", "3", "/s.yaml", TAG)
    queue.claim()
    queue.finish(1, "done", "fail", "run-9", "failed: red.target_prob_gain", handled_triggers=2)

    assert format_jobs(queue.jobs()) == [
        "    1 done    colour:3 verdict=fail attempts=1 run=run-9 "
        "triggers=model_version_alias.created, model_version_tag.set (failed: red.target_prob_gain)"
    ]
