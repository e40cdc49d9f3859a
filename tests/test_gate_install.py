"""`latentgate gate install` input checks and its advice about MLflow server settings.

The install and uninstall themselves, against a running MLflow server, are in
test_gate_end_to_end.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from gate_support import cli_env

from harness.errors import RegistryError
from registry_hooks.install import check_webhook_store, explain_webhook_error, install_webhook

RECEIVER = "http://127.0.0.1:8765/webhook"


@pytest.mark.parametrize("action", [["install", "--url", RECEIVER], ["uninstall"]])
def test_cli_rejects_file_store(tmp_path, action):
    completed = subprocess.run(
        [sys.executable, "-m", "harness.cli", "gate", action[0],
         "--tracking-uri", str(tmp_path / "mlruns"), *action[1:]],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "is a file store, which cannot hold webhooks" in completed.stderr
    assert "mlflow server --backend-store-uri sqlite:///mlflow.db" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", "MLflow sends webhook deliveries only from its tracking server"),
        ("postgresql+psycopg2://db/mlflow", "MLflow sends webhook deliveries only from its tracking server"),
        ("file:///tmp/mlruns", "is a file store"),
        ("databricks", "Poll its registry with `latentgate gate watch`"),
        ("ftp://example/registry", "has scheme 'ftp'"),
    ],
)
def test_store_without_webhooks_rejected(uri, expected):
    with pytest.raises(RegistryError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check_webhook_store(uri)


def test_server_url_accepted():
    check_webhook_store("http://127.0.0.1:5000")
    check_webhook_store("https://mlflow.example.com")


@pytest.mark.parametrize(
    ("url", "events", "expected"),
    [
        ("ftp://127.0.0.1/webhook", None, "invalid receiver URL 'ftp://127.0.0.1/webhook'"),
        ("http:///webhook", None, "invalid receiver URL"),
        (RECEIVER, ["model_version.deleted"], "unknown webhook event(s): model_version.deleted"),
    ],
)
def test_install_input_checks(url, events, expected):
    # The checks run before any request, so the server address is never contacted.
    with pytest.raises(RegistryError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        install_webhook("http://127.0.0.1:9", url, events=events)


def test_install_requires_secret(monkeypatch):
    from harness.errors import ConfigError

    monkeypatch.delenv("LATENTGATE_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="environment variable LATENTGATE_WEBHOOK_SECRET"):
        install_webhook("http://127.0.0.1:9", RECEIVER)


def test_advice_for_mlflow_scheme_rejection(monkeypatch):
    """MLflow's own URL check, run with a default server environment, gets the right advice."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_webhook_url

    monkeypatch.delenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", raising=False)
    monkeypatch.delenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", raising=False)
    with pytest.raises(MlflowException) as raised:
        _validate_webhook_url(RECEIVER)
    advice = explain_webhook_error(raised.value.message, RECEIVER)
    assert "MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https" in advice
    assert "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY" in advice


def test_advice_for_mlflow_private_ip_rejection(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_webhook_url

    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.delenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", raising=False)
    with pytest.raises(MlflowException) as raised:
        _validate_webhook_url(RECEIVER)
    advice = explain_webhook_error(raised.value.message, RECEIVER)
    assert "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true" in advice
