"""End to end: a real `mlflow server`, `latentgate gate serve` and `gate install`, on 127.0.0.1.

The MLflow server runs on a SQLite store with the settings a receiver on the same machine
needs: http and loopback webhook URLs allowed, and a secret encryption key. The test registers
the demo's clean and braids-skin classifiers through the server as versions 1 and 2 of `hair`
(version 1 passes the demo suite's `long_braids` expectations, version 2 fails them on skin
tone), moves aliases, and waits for the gate's tags and roll-back. Both servers are stopped at
the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from gate_support import cli_env, free_port, write_gate_file


pytestmark = pytest.mark.slow

# Seconds for a server to start or an evaluation to reach the version's tags. About 20 s and
# 10 s on an idle 2-core machine; the margin is for a machine busy with other work.
TIMEOUT_S = 300


def wait_until(predicate, timeout_s, description):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {description}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `command` in its own process group, writing its output to `log`.

    A file rather than a pipe, so that a long run cannot block on a full pipe buffer.
    """
    with open(log, "w") as output:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen, log: Path) -> str:
    """Stop a process group this test started with SIGTERM (SIGKILL after 30 s); return its log."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return f"--- {log.name} ---\n{log.read_text()[-4000:]}"


@pytest.fixture
def mlflow_server(tmp_path):
    from cryptography.fernet import Fernet

    port = free_port()
    mlflow_command = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    assert mlflow_command is not None
    env = dict(
        os.environ,
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode(),
    )
    log = tmp_path / "mlflow-server.log"
    process = start(
        [mlflow_command, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,  # the server keeps artifacts in ./mlartifacts
        env=env,
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: answers(f"{url}/health") or process.poll() is not None, TIMEOUT_S, "mlflow server"
        )
        assert process.poll() is None, log.read_text()[-4000:]
        yield url
    finally:
        print(stop(process, log))


def register(uri: str, variant: str) -> str:
    """Log a demo classifier through the server as the next version of `hair`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from harness.classifier.model import CLASS_NAMES_KEY, PREPROCESSING_KEY
    from harness.demo.attributes import CLASS_NAMES
    from harness.demo.networks import CLASSIFIER_PREPROCESSING, CLASSIFIER_RESOLUTION
    from harness.demo.registry import load_demo_classifier

    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("demo-models")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        # An explicit experiment: earlier tests in this process may have set another active one.
        with mlflow.start_run(experiment_id=experiment.experiment_id):
            info = mlflow.pytorch.log_model(
                load_demo_classifier(variant),
                name="classifier",
                input_example=np.zeros((2, 3, CLASSIFIER_RESOLUTION, CLASSIFIER_RESOLUTION), np.float32),
                serialization_format="pt2",
                registered_model_name="hair",
                metadata={CLASS_NAMES_KEY: list(CLASS_NAMES), PREPROCESSING_KEY: CLASSIFIER_PREPROCESSING},
                pip_requirements=["torch"],  # skips MLflow's slow requirement inference
            )
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return str(info.registered_model_version)


def write_braids_suite(folder: Path) -> Path:
    """suites/hair.yaml cut to `long_braids` and a short search, so that a job takes seconds.

    At these settings hair:1's long_braids direction measured gain 0.99, identity 0.92 and an
    ITA change of +4.2 degrees, and hair:2's an ITA change of -39.9 degrees.
    """
    suite_file = Path(__file__).resolve().parents[1] / "suites" / "hair.yaml"
    data = yaml.safe_load(suite_file.read_text())
    for key in ("generator", "identity"):
        data[key] = str((suite_file.parent / data[key]).resolve())
    data["search"].update({"num_samples": 6, "steps": 30, "num_frames": 3})
    data["classes"] = {"long_braids": None}
    path = folder / "braids.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_gate_on_registry_events(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    from registry_hooks.queue import JobQueue

    uri = mlflow_server
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # Created here, so that their artifacts go to the server's store and not to ./mlruns.
    client.create_experiment("latentgate")
    client.create_experiment("demo-models")
    port = free_port()
    config = write_gate_file(
        tmp_path, uri, write_braids_suite(tmp_path), "{aliases: [staging, champion]}",
        receiver=f"{{host: 127.0.0.1, port: {port}, path: /webhook}}",
        model="hair",
    )
    receiver_url = f"http://127.0.0.1:{port}/webhook"
    gate_log = tmp_path / "gate-serve.log"
    gate = start(
        [sys.executable, "-m", "harness.cli", "gate", "serve", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
        log=gate_log,
    )
    try:
        wait_until(
            lambda: answers(f"http://127.0.0.1:{port}/healthz") or gate.poll() is not None,
            TIMEOUT_S,
            "gate serve",
        )
        assert gate.poll() is None

        def install(url: str, **env: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "harness.cli", "gate", "install",
                 "--tracking-uri", uri, "--url", url],
                cwd=tmp_path,
                env=cli_env(**env),
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )

        # A wrong path fails the test delivery and leaves no webhook behind.
        wrong_path = install(f"http://127.0.0.1:{port}/wrong")
        assert wrong_path.returncode == 2, wrong_path.stderr[-3000:]
        assert "the receiver does not serve the path" in wrong_path.stderr
        assert "Traceback" not in wrong_path.stderr
        assert list(client.list_webhooks()) == []

        installed = install(receiver_url)
        assert installed.returncode == 0, installed.stderr[-3000:]
        assert "created webhook 'latentgate'" in installed.stdout
        assert "test delivery (model_version.created): HTTP 200" in installed.stdout

        # A wrong secret fails too, and the working webhook keeps its secret: the events
        # below still reach the receiver.
        wrong_secret = install(receiver_url, LATENTGATE_WEBHOOK_SECRET="not-the-receivers-secret")
        assert wrong_secret.returncode == 2, wrong_secret.stderr[-3000:]
        assert "the receiver rejected the signature" in wrong_secret.stderr
        assert "Webhook 'latentgate' was not changed" in wrong_secret.stderr
        assert [webhook.name for webhook in client.list_webhooks()] == ["latentgate"]

        assert register(uri, "clean") == "1"
        assert register(uri, "braids-skin") == "2"

        def tags(version: str) -> dict[str, str]:
            return dict(client.get_model_version("hair", version).tags)

        def aliases() -> dict[str, str]:
            return {a: str(v) for a, v in client.get_registered_model("hair").aliases.items()}

        # Staging on version 1: evaluated, passes, tagged.
        client.set_registered_model_alias("hair", "staging", "1")
        wait_until(lambda: "latentgate.verdict" in tags("1"), TIMEOUT_S, "the verdict on version 1")
        first = tags("1")
        assert first["latentgate.verdict"] == "pass"
        assert first["latentgate.suite"] == "hair"
        assert first["latentgate.failed"] == ""
        assert first["latentgate.trigger"] == "model_version_alias.created alias=staging"
        assert client.get_run(first["latentgate.run_id"]).info.status == "FINISHED"

        # Champion on version 1 passes and stays. The gate records version 1 as its holder.
        client.set_registered_model_alias("hair", "champion", "1")
        wait_until(
            lambda: tags("1")["latentgate.run_id"] != first["latentgate.run_id"],
            TIMEOUT_S,
            "the champion evaluation of version 1",
        )
        assert tags("1")["latentgate.verdict"] == "pass"
        assert aliases() == {"staging": "1", "champion": "1"}

        # Champion on version 2 fails, so the gate moves champion back to version 1.
        client.set_registered_model_alias("hair", "champion", "2")
        wait_until(lambda: aliases().get("champion") == "1", TIMEOUT_S, "the champion roll-back")
        # The gate moves the alias first and then tags the reason, so wait for the tag too.
        wait_until(lambda: "latentgate.alias_rollback" in tags("2"), TIMEOUT_S, "the roll-back tag")
        second = tags("2")
        assert second["latentgate.verdict"] == "fail"
        assert "long_braids.skin_ita_delta_deg" in second["latentgate.failed"].split(",")
        assert second["latentgate.trigger"] == "model_version_alias.created alias=champion"
        assert "alias 'champion' moved back from version 2 to version 1: verdict fail" in (
            second["latentgate.alias_rollback"]
        )

        # The roll-back's own alias event and the gate's tag events queue nothing more.
        queue = JobQueue(tmp_path / "queue.db")
        wait_until(lambda: queue.count("queued", "running") == 0, 30, "an idle queue")
        time.sleep(3)
        assert [job.version for job in queue.jobs()] == ["2", "1", "1"]
        assert all(job.state == "done" for job in queue.jobs())
        with queue.transaction() as tx:
            outcomes = dict(
                tx.connection.execute(
                    "SELECT event || ' ' || outcome, COUNT(*) FROM deliveries GROUP BY 1"
                ).fetchall()
            )
        assert outcomes["model_version_tag.set ignored"] >= 8  # the gate's own tags
        assert outcomes["model_version_alias.created ignored"] == 1  # the roll-back
        assert outcomes["model_version_alias.created queued"] == 3

        # Uninstall deletes the webhook, and a second uninstall finds nothing to delete.
        for expected in ("deleted webhook 'latentgate'", "no webhook named 'latentgate'"):
            uninstalled = subprocess.run(
                [sys.executable, "-m", "harness.cli", "gate", "uninstall", "--tracking-uri", uri],
                cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
            )
            assert uninstalled.returncode == 0, uninstalled.stderr[-3000:]
            assert expected in uninstalled.stdout
            assert list(client.list_webhooks()) == []
    finally:
        logs = stop(gate, gate_log)
        print(logs)
    assert gate.returncode == 0, logs
    assert "alias 'champion' moved back from version 2 to version 1" in gate_log.read_text()
