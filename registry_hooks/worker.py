"""The worker: takes jobs from the queue one at a time and runs the main job for each.

Order matters for a crash. evaluate() ends its MLflow run before it tags the version, so a
version tagged `pass` always names a finished run. A process killed mid-job leaves the job
`running` in the queue, with an unfinished run or with the version's tags not yet written. At
the next start the job is re-queued as interrupted. Before any job runs, the worker tags that
version `error` and ends the orphaned run FAILED, because its old verdict no longer describes
the evaluation that was asked for. Only then does the job run again (or end `error` after
`max_attempts` starts).
"""

from __future__ import annotations

import logging
import threading

from mlflow.exceptions import MlflowException

from harness.errors import LatentGateError
from harness.evaluation import evaluate
from registry_hooks.config import GateConfig
from registry_hooks.queue import Job, JobQueue
from registry_hooks.writeback import (
    find_job_runs,
    mark_interrupted,
    roll_back_aliases,
    tag_alias_rollback,
    write_job_tags,
)

log = logging.getLogger(__name__)

# Seconds between looks at the queue when nothing wakes the worker (another process may add
# jobs through `watch`), and the pause after an unexpected error.
_IDLE_POLL_S = 2.0
_ERROR_PAUSE_S = 5.0
# Delivery ids older than this are forgotten; the receiver rejects their timestamps anyway.
_DELIVERY_RETENTION_S = 24 * 3600.0


class GateWorker:
    """Runs queued jobs with `harness.evaluation.evaluate` and writes the results back."""

    def __init__(self, config: GateConfig, queue: JobQueue) -> None:
        self.config = config
        self.queue = queue
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.current_job: Job | None = None

    def wake(self) -> None:
        """Make an idle worker look at the queue now."""
        self._wake.set()

    def stop(self) -> None:
        """Ask the worker to stop after the job it is running."""
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Run jobs until `stop()` is called."""
        log.info("worker started on queue %s", self.queue.path)
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception:
                log.exception("worker error; retrying in %.0f s", _ERROR_PAUSE_S)
                self._stop.wait(_ERROR_PAUSE_S)
                continue
            if not worked:
                self._wake.wait(_IDLE_POLL_S)
                self._wake.clear()
        log.info("worker stopped")

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="gate-worker", daemon=True)
        thread.start()
        return thread

    def run_until_idle(self) -> int:
        """Run jobs until the queue is empty; return how many ran."""
        count = 0
        while self.step():
            count += 1
        return count

    def step(self) -> bool:
        """Clean up interrupted jobs, then run one queued job; return whether one ran."""
        for job in self.queue.interrupted():
            try:
                mark_interrupted(self.config.tracking_uri, job)
            except MlflowException as error:
                if getattr(error, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                    raise  # the registry is unreachable: retry before running anything
                log.warning("job %d: %s version %s no longer exists (%s)",
                            job.id, job.model, job.version, error.message)
            self.queue.clear_interrupted(job.id)
        job = self.queue.claim()
        if job is None:
            self.queue.prune_deliveries(
                max(_DELIVERY_RETENTION_S, 2 * self.config.receiver.max_timestamp_age_s)
            )
            return False
        self.current_job = job
        try:
            self.process(job)
        finally:
            self.current_job = None
        return True

    def process(self, job: Job) -> None:
        """Evaluate one claimed job, tag the version, roll back aliases, and finish the job."""
        max_attempts = self.config.worker.max_attempts
        if job.attempts > max_attempts:
            message = (
                f"the gate stopped during this evaluation {job.attempts - 1} times; gave up "
                f"after {max_attempts} attempt(s)"
            )
            log.error("job %d (%s version %s): %s", job.id, job.model, job.version, message)
            # The clean-up before this claim has already tagged the version `error`, with the
            # orphaned run.
            self._write_back(job, "error", None, message, replace_verdict=False)
            return

        log.info(
            "job %d: evaluating %s version %s against %s (attempt %d)",
            job.id, job.model, job.version, job.suite, job.attempts,
        )
        try:
            result = evaluate(
                f"models:/{job.model}/{job.version}",
                job.suite,
                tracking_uri=self.config.tracking_uri,
                device=self.config.worker.device,
                progress=False,
            )
        except LatentGateError as error:
            self._write_back(job, "error", self._run_id(job), str(error), replace_verdict=True)
            return
        except Exception as error:
            log.exception("job %d: the evaluation failed", job.id)
            self._write_back(job, "error", self._run_id(job), repr(error), replace_verdict=True)
            return
        verdict = result.gate.verdict
        if verdict == "error":
            message = (
                "a class's search, measurement or check ended in an error; see report.html of "
                f"run {result.run_id}"
            )
        elif result.gate.failed:
            message = f"failed: {', '.join(result.gate.failed)}"
        else:
            message = ""
        self._write_back(job, verdict, result.run_id, message, replace_verdict=False)

    def _run_id(self, job: Job) -> str | None:
        try:
            runs = find_job_runs(self.config.tracking_uri, job)
        except Exception:
            log.exception("job %d: could not look up its MLflow run", job.id)
            return None
        return runs[0].info.run_id if runs else None

    def _write_back(
        self, job: Job, verdict: str, run_id: str | None, message: str, replace_verdict: bool
    ) -> None:
        uri = self.config.tracking_uri
        state = "done" if verdict in ("pass", "fail") else "error"
        notes: list[str] = []
        handled = 0
        while True:
            # Deliveries merged into the job while it ran count too, so triggers are read again,
            # and again whenever `finish` finds more of them.
            triggers = self.queue.job(job.id).triggers
            try:
                write_job_tags(
                    uri,
                    job,
                    triggers,
                    error=message if verdict == "error" else "",
                    run_id=run_id,
                    replace_verdict=replace_verdict,
                )
                if verdict != "pass":
                    new_notes = roll_back_aliases(
                        uri, self.queue, job, triggers[handled:], verdict, run_id
                    )
                    if new_notes:
                        notes += new_notes
                        tag_alias_rollback(uri, job, notes)
            except Exception as error:
                log.exception(
                    "job %d: could not write the result to %s version %s",
                    job.id, job.model, job.version,
                )
                notes.append(f"write-back failed: {error!r}")
            handled = len(triggers)
            full_message = "; ".join(part for part in [message, *notes] if part)
            if self.queue.finish(job.id, state, verdict, run_id, full_message, handled):
                break
        log.info(
            "job %d: %s version %s verdict %s%s",
            job.id, job.model, job.version, verdict, f" ({full_message})" if full_message else "",
        )
