"""gate.yaml validation: every problem is reported with its file, line, key and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gate_support import SECRET, cli_env
from toy_models import write_suite

from harness.errors import ConfigError, RegistryError
from registry_hooks.config import load_gate_config, read_secret

REPO = Path(__file__).resolve().parents[1]

VALID = """\
version: 1
tracking_uri: sqlite:///{folder}/mlflow.db
queue: state/queue.db
receiver: {{port: 9123}}
models:
  colour:
    suite: suite.yaml
    triggers:
      version_created: true
      aliases: [staging, champion]
      tags: {{ready: "true"}}
      stages: [Production]
    protected_aliases: [champion]
"""


def write(folder: Path, text: str) -> Path:
    write_suite(folder)
    path = folder / "gate.yaml"
    path.write_text(text.format(folder=folder))
    return path


def test_valid_file_resolves(tmp_path):
    config = load_gate_config(write(tmp_path, VALID))

    assert config.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert config.queue_path == tmp_path / "state" / "queue.db"
    assert config.receiver.host == "127.0.0.1"
    assert config.receiver.port == 9123
    assert config.receiver.max_timestamp_age_s == 300
    model = config.models["colour"]
    assert model.suite == tmp_path / "suite.yaml"
    assert model.version_created is True
    assert model.aliases == ("staging", "champion")
    assert model.tags == {"ready": "true"}
    assert model.stages == ("Production",)
    assert model.protected_aliases == ("champion",)


@pytest.mark.parametrize(
    ("case", "old", "new", "expected"),
    [
        (
            "unknown top-level key",
            "queue: state/queue.db",
            "queues: state/queue.db",
            "gate.yaml:3: queues: unknown key 'queues'; allowed keys here: version, tracking_uri, "
            "queue, receiver, worker, watch, models",
        ),
        (
            "quoted port",
            "{{port: 9123}}",
            '{{port: "9123"}}',
            "gate.yaml:4: receiver.port: expected an integer, got the string '9123'; remove the quotes",
        ),
        (
            "alias list as string",
            "aliases: [staging, champion]",
            "aliases: staging",
            "gate.yaml:10: models.colour.triggers.aliases: expected a list, got the string 'staging'",
        ),
        (
            "tag value not a string",
            'tags: {{ready: "true"}}',
            "tags: {{ready: true}}",
            "models.colour.triggers.tags.ready: expected a string, got the boolean true",
        ),
        (
            "unknown stage",
            "stages: [Production]",
            "stages: [Prod]",
            "models.colour.triggers.stages[0]: expected 'Staging', 'Production', 'Archived' or "
            "'None', got the string 'Prod'",
        ),
        (
            "protected alias without trigger",
            "protected_aliases: [champion]",
            "protected_aliases: [prod]",
            "models.colour.protected_aliases: alias 'prod' is protected but does not trigger an "
            "evaluation, so a failing version could keep it; add it to models.colour.triggers.aliases",
        ),
        (
            "reserved alias",
            "aliases: [staging, champion]",
            "aliases: [staging, champion, latest]",
            "models.colour.triggers.aliases[2]: 'latest' alias name (case insensitive) is reserved.",
        ),
        (
            "own tag as trigger",
            'tags: {{ready: "true"}}',
            'tags: {{latentgate.verdict: "pass"}}',
            "gate.yaml:11: models.colour.triggers.tags.latentgate.verdict: tag 'latentgate.verdict' starts with "
            "'latentgate.': the gate writes those tags itself",
        ),
        (
            "missing suite",
            "suite: suite.yaml",
            "suite: nope.yaml",
            "gate.yaml:7: models.colour.suite: suite file not found: {folder}/nope.yaml (resolved "
            "from 'nope.yaml' against the folder of the gate file)",
        ),
        (
            "unsupported version",
            "version: 1",
            "version: 2",
            "gate.yaml:1: version: unsupported gate file version 2; this LatentGate reads `version: 1`",
        ),
        (
            "bad receiver path",
            "{{port: 9123}}",
            "{{port: 9123, path: webhook}}",
            "gate.yaml:4: receiver.path: must start with '/', got 'webhook'",
        ),
    ],
)
def test_invalid_file_names_line_and_key(tmp_path, case, old, new, expected):
    assert VALID.count(old) == 1, case
    path = write(tmp_path, VALID.replace(old, new))
    with pytest.raises(ConfigError) as raised:
        load_gate_config(path)
    message = str(raised.value)
    assert message.startswith(f"invalid gate file {path} (1 error):"), message
    assert expected.format(folder=tmp_path) in message


def test_model_without_triggers(tmp_path):
    text = VALID.replace(
        """    triggers:
      version_created: true
      aliases: [staging, champion]
      tags: {{ready: "true"}}
      stages: [Production]
    protected_aliases: [champion]
""",
        "    triggers: {{}}\n",
    )
    with pytest.raises(ConfigError, match="model 'colour' has no trigger; set version_created"):
        load_gate_config(write(tmp_path, text))


def test_every_problem_reported_at_once(tmp_path):
    text = VALID.replace("queue: state/queue.db", "queues: x").replace("{{port: 9123}}", "{{port: -1}}")
    with pytest.raises(ConfigError) as raised:
        load_gate_config(write(tmp_path, text))
    message = str(raised.value)
    assert "(2 errors)" in message
    assert "queues: unknown key" in message
    assert "receiver.port: must be >= 0, got -1" in message


def test_file_store_rejected(tmp_path):
    text = VALID.replace("sqlite:///{folder}/mlflow.db", "{folder}/mlruns")
    with pytest.raises(RegistryError, match="is a file store"):
        load_gate_config(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="gate file not found: .*missing.yaml"):
        load_gate_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "environment variable GATE_SECRET_FOR_TEST (receiver.secret_env) is unset or empty"),
        ("short", "has 5 characters; use at least 16"),
    ],
)
def test_secret_checks(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("GATE_SECRET_FOR_TEST", raising=False)
    else:
        monkeypatch.setenv("GATE_SECRET_FOR_TEST", value)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_secret("GATE_SECRET_FOR_TEST", "receiver.secret_env")


def run_gate_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "gate", *args],
        cwd=cwd,
        env=cli_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_serve_invalid_file(tmp_path):
    path = write(tmp_path, VALID.replace("{{port: 9123}}", '{{port: "9123"}}'))
    completed = run_gate_cli("serve", "--config", str(path), cwd=tmp_path)
    assert completed.returncode == 2
    assert f"{path}:4: receiver.port: expected an integer" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_cli_serve_missing_secret(tmp_path):
    path = write(tmp_path, VALID)
    env = {"LATENTGATE_WEBHOOK_SECRET": ""}
    completed = run_gate_cli("serve", "--config", str(path), cwd=tmp_path, env=env)
    assert completed.returncode == 2
    assert "environment variable LATENTGATE_WEBHOOK_SECRET" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert SECRET not in completed.stderr


def test_cli_jobs_empty_queue(tmp_path):
    path = write(tmp_path, VALID)
    completed = run_gate_cli("jobs", "--config", str(path), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"no jobs in {tmp_path / 'state' / 'queue.db'}"


@pytest.mark.parametrize("limit", ["0", "-3", "ten"])
def test_cli_jobs_limit_must_be_positive(tmp_path, limit):
    path = write(tmp_path, VALID)
    completed = run_gate_cli("jobs", "--config", str(path), "--limit", limit, cwd=tmp_path)
    assert completed.returncode == 2
    assert f"--limit: expected a whole number of at least 1, got '{limit}'" in completed.stderr
