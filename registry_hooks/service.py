"""Start-up and shut-down shared by `latentgate gate serve` and `latentgate gate watch`.

Both hold the queue's lock, put jobs a dead process left `running` back in the queue, read the
current alias holders from the registry, and run the worker in a thread. On SIGTERM or Ctrl+C
they stop taking new events and let the running job finish. A second Ctrl+C exits at once, and
the job runs again at the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from harness.errors import ConfigError
from registry_hooks.config import GateConfig, check_suites, is_loopback_host
from registry_hooks.queue import JobQueue
from registry_hooks.worker import GateWorker

log = logging.getLogger(__name__)


def observe_registry_aliases(config: GateConfig, queue: JobQueue) -> None:
    """Record each configured model's current alias holders, the base for later roll-backs."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if not _server_reachable(config.tracking_uri):
        log.warning(
            "the MLflow server at %s is not reachable; the gate starts anyway, and roll-backs "
            "use the aliases that events report. Start the server or fix tracking_uri.",
            config.tracking_uri,
        )
        return
    client = MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)
    for name in config.models:
        try:
            aliases = dict(client.get_registered_model(name).aliases or {})
        except MlflowException as error:
            if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                log.info("model %r is not registered yet; its aliases are learnt from events", name)
                continue
            log.warning(
                "could not read the aliases of %r from %s (%s); roll-backs use what events "
                "report", name, config.tracking_uri, error.message,
            )
            continue
        except OSError as error:
            log.warning(
                "could not reach %s to read the aliases of %r (%s); roll-backs use what events "
                "report", config.tracking_uri, name, error,
            )
            return
        queue.observe_aliases(name, {alias: str(version) for alias, version in aliases.items()})
        if aliases:
            listing = ", ".join(f"{alias} -> {version}" for alias, version in sorted(aliases.items()))
            log.info("model %r aliases: %s", name, listing)


def _server_reachable(tracking_uri: str, timeout_s: float = 5.0) -> bool:
    """Return False when an http(s) tracking URI's /health endpoint cannot be connected to.

    Checked once, so that a server that is down costs one line in the log rather than the
    MLflow client's minutes of retries. Any HTTP response, an error status included, counts as
    reachable, and other stores are not checked.
    """
    import urllib.error
    import urllib.request

    if not tracking_uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _check_environment(config: GateConfig) -> None:
    if os.environ.get("MLFLOW_RUN_ID"):
        raise ConfigError(
            "MLFLOW_RUN_ID is set, so every evaluation would log into that one run. Unset it "
            "before starting the gate; it is meant for single runs such as `mlflow run`."
        )
    if not is_loopback_host(config.receiver.host):
        log.warning(
            "the receiver listens on %s, beyond this machine; serve it behind HTTPS, because "
            "MLflow accepts only https webhook URLs unless the server allows http",
            config.receiver.host,
        )


@contextmanager
def running_gate(config: GateConfig, worker_thread: bool = True) -> Iterator[tuple[JobQueue, GateWorker]]:
    """Lock and recover the queue, start the worker, and stop it again when the block ends."""
    _check_environment(config)
    check_suites(config)
    queue = JobQueue(config.queue_path)
    lock = queue.lock()
    try:
        queue.recover_interrupted()
        observe_registry_aliases(config, queue)
        worker = GateWorker(config, queue)
        thread = worker.start_in_thread() if worker_thread else None
        try:
            yield queue, worker
        finally:
            if thread is not None:
                _stop_worker(worker, thread)
    finally:
        lock.release()


def _stop_worker(worker: GateWorker, thread: threading.Thread) -> None:
    worker.stop()
    job = worker.current_job
    if job is not None and thread.is_alive():
        log.info(
            "waiting for job %d (%s version %s) to finish; press Ctrl+C again to stop now, and "
            "it runs again at the next start", job.id, job.model, job.version,
        )
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        log.warning("stopped without waiting; the interrupted job runs again at the next start")


def on_sigterm(stop: Callable[[], None]) -> None:
    """Call `stop` from a new thread on SIGTERM (a handler must not block the main thread)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=stop).start())


def serve(config: GateConfig) -> None:
    """Run the webhook receiver and the worker until SIGTERM or Ctrl+C."""
    from registry_hooks.receiver import GateHTTPServer

    secret = config.read_secret()
    if any(model.stages for model in config.models.values()):
        log.warning(
            "MLflow sends no webhook for stage transitions; the `stages` triggers in %s work "
            "only with `latentgate gate watch`", config.path,
        )
    with running_gate(config) as (queue, worker):
        try:
            server = GateHTTPServer(config, queue, secret, on_queued=worker.wake)
        except OSError as error:
            receiver = config.receiver
            raise ConfigError(
                f"cannot listen on {receiver.host}:{receiver.port}: {error.strerror or error}. "
                f"Stop what uses the port or set another receiver.port in {config.path}."
            ) from None
        on_sigterm(server.shutdown)
        log.info(
            "receiving MLflow webhook deliveries at %s (registry %s, queue %s)",
            server.url, config.tracking_uri, queue.path,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            server.server_close()
        log.info("receiver stopped")
