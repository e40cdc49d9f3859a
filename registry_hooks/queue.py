"""The gate's durable state in one SQLite file: jobs, delivery ids, alias holders, snapshots.

A delivery is committed here before the receiver acknowledges it. The file uses WAL with
`synchronous=FULL`, so a commit survives a crash of the process, and of the machine when the
disk honours fsync. A job moves queued -> running -> done (verdict pass or fail) or error. A
partial unique index on (model, version, suite) over queued and running jobs makes a second
trigger for the same evaluation merge into the pending job instead of adding one. A job found `running` when the
service starts was interrupted: it goes back to `queued` with `interrupted` set, and the worker
tags its version `error` before running it again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PENDING_STATES = ("queued", "running")
# How long a write the gate makes to an alias waits for its own event to come back.
OWN_WRITE_TTL_S = 600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    suite TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'error')),
    triggers TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    interrupted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    verdict TEXT,
    run_id TEXT,
    message TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_pending_key
    ON jobs (model, version, suite) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    job_id INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (received_at);
CREATE TABLE IF NOT EXISTS alias_holders (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT,
    previous_version TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (model, alias)
);
CREATE TABLE IF NOT EXISTS own_alias_writes (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS watch_snapshots (
    model TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


class DeliveryReplayed(Exception):
    """A delivery id that the queue has already recorded."""


@dataclass(frozen=True)
class Job:
    """One evaluation of a model version against a suite, and what triggered it."""

    id: int
    model: str
    version: str
    suite: str  # absolute path of the suite file
    state: str
    triggers: list[dict[str, Any]]
    attempts: int  # times a worker has started it
    interrupted: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    verdict: str | None
    run_id: str | None
    message: str | None


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        model=row["model"],
        version=row["version"],
        suite=row["suite"],
        state=row["state"],
        triggers=json.loads(row["triggers"]),
        attempts=row["attempts"],
        interrupted=bool(row["interrupted"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        verdict=row["verdict"],
        run_id=row["run_id"],
        message=row["message"],
    )


class QueueTransaction:
    """The writes of one delivery or poll, committed together by `JobQueue.transaction`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def remember_delivery(self, delivery_id: str, event: str) -> None:
        """Record a delivery id; raise DeliveryReplayed if it was recorded before."""
        try:
            self.connection.execute(
                "INSERT INTO deliveries (delivery_id, received_at, event, outcome) "
                "VALUES (?, ?, ?, 'received')",
                (delivery_id, time.time(), event),
            )
        except sqlite3.IntegrityError:
            raise DeliveryReplayed(delivery_id) from None

    def set_delivery_outcome(self, delivery_id: str, outcome: str, job_id: int | None) -> None:
        self.connection.execute(
            "UPDATE deliveries SET outcome = ?, job_id = ? WHERE delivery_id = ?",
            (outcome, job_id, delivery_id),
        )

    def enqueue(
        self, model: str, version: str, suite: str, trigger: dict[str, Any]
    ) -> tuple[int, bool]:
        """Queue an evaluation, or add `trigger` to the pending one; return (job id, merged)."""
        row = self.connection.execute(
            "SELECT id, triggers FROM jobs WHERE model = ? AND version = ? AND suite = ? "
            "AND state IN ('queued', 'running')",
            (model, version, suite),
        ).fetchone()
        if row is not None:
            triggers = json.loads(row["triggers"])
            if trigger not in triggers:
                triggers.append(trigger)
                self.connection.execute(
                    "UPDATE jobs SET triggers = ? WHERE id = ?", (json.dumps(triggers), row["id"])
                )
            return row["id"], True
        cursor = self.connection.execute(
            "INSERT INTO jobs (model, version, suite, state, triggers, created_at) "
            "VALUES (?, ?, ?, 'queued', ?, ?)",
            (model, version, suite, json.dumps([trigger]), time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, False

    def move_alias(self, model: str, alias: str, version: str | None) -> str | None:
        """Record that `alias` now points at `version` (None: deleted); return the previous holder.

        Setting an alias to its current version keeps the earlier holder as the previous one, so
        a repeated event still has a version to roll back to.
        """
        row = self.connection.execute(
            "SELECT version, previous_version FROM alias_holders WHERE model = ? AND alias = ?",
            (model, alias),
        ).fetchone()
        if row is None:
            previous = None
        elif row["version"] == version:
            return row["previous_version"]
        else:
            previous = row["version"]
        self.connection.execute(
            "INSERT INTO alias_holders (model, alias, version, previous_version, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model, alias) DO UPDATE SET "
            "version = excluded.version, previous_version = excluded.previous_version, "
            "updated_at = excluded.updated_at",
            (model, alias, version, previous, time.time()),
        )
        return previous

    def consume_own_alias_write(self, model: str, alias: str, version: str | None) -> bool:
        """Return whether the gate itself made this alias change, and forget that write."""
        self.connection.execute("DELETE FROM own_alias_writes WHERE expires_at < ?", (time.time(),))
        row = self.connection.execute(
            "SELECT rowid FROM own_alias_writes WHERE model = ? AND alias = ? AND version IS ? "
            "ORDER BY rowid LIMIT 1",
            (model, alias, version),
        ).fetchone()
        if row is None:
            return False
        self.connection.execute("DELETE FROM own_alias_writes WHERE rowid = ?", (row["rowid"],))
        return True

    def watch_snapshot(self, model: str) -> dict[str, Any] | None:
        row = self.connection.execute(
            "SELECT state FROM watch_snapshots WHERE model = ?", (model,)
        ).fetchone()
        return None if row is None else json.loads(row["state"])

    def save_watch_snapshot(self, model: str, state: dict[str, Any]) -> None:
        self.connection.execute(
            "INSERT INTO watch_snapshots (model, state, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (model) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (model, json.dumps(state, sort_keys=True), time.time()),
        )


class QueueLock:
    """An exclusive lock on a queue file, held by the one gate process that runs its jobs."""

    def __init__(self, queue_path: Path) -> None:
        self.path = queue_path.with_name(queue_path.name + ".lock")
        self._file = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise ConfigError(
                f"the queue {queue_path} is in use by another `latentgate gate` process (pid "
                f"{holder}). Stop that process, or give this one its own `queue:` file in the "
                "gate file."
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


class JobQueue:
    """The SQLite queue file. Each call opens its own connection, so any thread may use it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(
                    f"the queue {self.path} has schema version {version}, but this LatentGate "
                    f"reads version {SCHEMA_VERSION}; use a new `queue:` file"
                )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: transactions are opened explicitly with BEGIN IMMEDIATE.
        connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA busy_timeout=30000")
            yield connection
        finally:
            connection.close()

    @contextmanager
    def transaction(self) -> Iterator[QueueTransaction]:
        """Open a write transaction that commits when the block ends without an exception."""
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield QueueTransaction(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def lock(self) -> QueueLock:
        """Take the exclusive lock; raise ConfigError if another process holds it."""
        return QueueLock(self.path)

    def recover_interrupted(self) -> list[Job]:
        """Put jobs left `running` by a process that died back in the queue, marked interrupted.

        Call it only while holding the lock, so that no other process is running them.
        """
        with self.transaction() as tx:
            connection = tx.connection
            rows = connection.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
            connection.execute(
                "UPDATE jobs SET state = 'queued', interrupted = 1 WHERE state = 'running'"
            )
        jobs = [_job(row) for row in rows]
        for job in jobs:
            log.warning(
                "job %d (%s version %s) was running when the gate stopped; re-queued",
                job.id,
                job.model,
                job.version,
            )
        return jobs

    def interrupted(self) -> list[Job]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT * FROM jobs WHERE interrupted = 1 AND state = 'queued' ORDER BY id"
            ).fetchall()
        return [_job(row) for row in rows]

    def clear_interrupted(self, job_id: int) -> None:
        with self.transaction() as tx:
            tx.connection.execute("UPDATE jobs SET interrupted = 0 WHERE id = ?", (job_id,))

    def claim(self) -> Job | None:
        """Mark the oldest queued job running and return it, or return None if none is queued."""
        with self.transaction() as tx:
            connection = tx.connection
            row = connection.execute(
                "SELECT id FROM jobs WHERE state = 'queued' AND interrupted = 0 ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            connection.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? "
                "WHERE id = ?",
                (time.time(), row["id"]),
            )
            return _job(connection.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def job(self, job_id: int) -> Job:
        with self._connect() as connection:
            row = connection.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        assert row is not None, f"job {job_id} does not exist"
        return _job(row)

    def finish(
        self,
        job_id: int,
        state: str,
        verdict: str,
        run_id: str | None,
        message: str,
        handled_triggers: int,
    ) -> bool:
        """End a job, unless a trigger arrived after the first `handled_triggers`.

        Triggers are only ever appended, so a longer list means a delivery merged into the job
        while its result was being written. Returns False then, and the caller writes the result
        for the new triggers and calls again.
        """
        assert state in ("done", "error")
        with self.transaction() as tx:
            cursor = tx.connection.execute(
                "UPDATE jobs SET state = ?, verdict = ?, run_id = ?, message = ?, finished_at = ? "
                "WHERE id = ? AND json_array_length(triggers) = ?",
                (state, verdict, run_id, message, time.time(), job_id, handled_triggers),
            )
        return cursor.rowcount == 1

    def jobs(self, limit: int = 50) -> list[Job]:
        """Return the newest `limit` jobs, newest first."""
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_job(row) for row in rows]

    def count(self, *states: str) -> int:
        marks = ", ".join("?" for _ in states)
        with self._connect() as connection:
            return connection.execute(
                f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})", states
            ).fetchone()[0]

    def delivery_count(self) -> int:
        with self._connect() as connection:
            return connection.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]

    def alias_holder(self, model: str, alias: str) -> str | None:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT version FROM alias_holders WHERE model = ? AND alias = ?", (model, alias)
            ).fetchone()
        return None if row is None else row["version"]

    def observe_aliases(self, model: str, aliases: dict[str, str]) -> None:
        """Record the alias holders read from the registry, without triggering anything."""
        with self.transaction() as tx:
            for alias, version in aliases.items():
                tx.move_alias(model, alias, version)

    def record_alias_rollback(self, model: str, alias: str, version: str | None) -> None:
        """Record an alias write the gate is about to make, before it makes it.

        The event MLflow sends for it is then recognised and ignored, and the holder table
        already shows the new holder, with no earlier holder to roll back to.
        """
        with self.transaction() as tx:
            tx.connection.execute(
                "INSERT INTO own_alias_writes (model, alias, version, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (model, alias, version, time.time() + OWN_WRITE_TTL_S),
            )
            tx.connection.execute(
                "INSERT INTO alias_holders (model, alias, version, previous_version, updated_at) "
                "VALUES (?, ?, ?, NULL, ?) ON CONFLICT (model, alias) DO UPDATE SET "
                "version = excluded.version, previous_version = NULL, "
                "updated_at = excluded.updated_at",
                (model, alias, version, time.time()),
            )

    def prune_deliveries(self, older_than_s: float) -> int:
        """Forget delivery ids older than `older_than_s` seconds; return how many."""
        with self.transaction() as tx:
            cursor = tx.connection.execute(
                "DELETE FROM deliveries WHERE received_at < ?", (time.time() - older_than_s,)
            )
        return cursor.rowcount


def format_jobs(jobs: list[Job]) -> list[str]:
    """Return one line per job: id, state, model version, verdict, attempts, run and triggers."""
    lines = []
    for job in jobs:
        events = ", ".join(sorted({trigger["event"] for trigger in job.triggers}))
        lines.append(
            f"{job.id:>5} {job.state:<7} {job.model}:{job.version} verdict={job.verdict or '-'} "
            f"attempts={job.attempts} run={job.run_id or '-'} triggers={events}"
            + (f" ({job.message})" if job.message else "")
        )
    return lines
