"""`latentgate gate install`: create the webhook on an MLflow tracking server and test it.

Facts from MLflow 3.17's source that decide what works:

- Only the tracking server sends deliveries (`mlflow/server/handlers.py` calls
  `deliver_webhook` after each registry change it handles), and `deliver_webhook` skips the
  file store. A client writing straight to a database stores the webhook but sends nothing, and
  `test_webhook` needs the server's REST API.
- The server accepts only `https` webhook URLs unless `MLFLOW_WEBHOOK_ALLOWED_SCHEMES` lists
  `http`, and rejects URLs that resolve to loopback or private addresses unless
  `MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true` (`mlflow/utils/validation.py`,
  `_validate_webhook_url`). Both are read by the server process, at creation and at delivery.
- The server encrypts webhook secrets with `MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`, a Fernet
  key. Without it each server process makes up its own key, so a secret stored by one worker
  process or before a restart cannot be read by another (`mlflow/store/model_registry/dbmodels/
  models.py`, `EncryptedString`).
- The server caches the webhooks of each event for `MLFLOW_WEBHOOK_CACHE_TTL` seconds (60 by
  default), so a new webhook can miss events for up to that long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlparse

from harness.errors import RegistryError
from registry_hooks.config import DEFAULT_SECRET_ENV, read_secret
from registry_hooks.events import DEFAULT_WEBHOOK_EVENTS, MODEL_REGISTRY_EVENTS

log = logging.getLogger(__name__)

DEFAULT_WEBHOOK_NAME = "latentgate"
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

SERVER_SETTINGS = (
    "Start the MLflow server with these environment variables when the receiver runs on the "
    "same machine or a private network: MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https (plain http), "
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true (loopback and private addresses), and "
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=<a Fernet key> (so that every server process can "
    "read the webhook secret; make one with python -c 'from cryptography.fernet import "
    "Fernet; print(Fernet.generate_key().decode())')."
)


@dataclass(frozen=True)
class InstallResult:
    """The webhook as created or updated, and the outcome of its test delivery."""

    webhook_id: str
    name: str
    url: str
    events: tuple[str, ...]
    created: bool  # False: an existing webhook of that name was updated
    test_event: str
    test_status: int | None
    test_body: str | None


def check_webhook_store(tracking_uri: str) -> None:
    """Raise RegistryError unless `tracking_uri` is an MLflow server, the only sender of webhooks."""
    scheme = urlparse(tracking_uri).scheme.lower()
    if scheme in ("http", "https"):
        return
    server_hint = (
        "Run `mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000` "
        "and pass --tracking-uri http://127.0.0.1:5000"
    )
    # `databricks` alone, or with a profile (`databricks://profile`), names a workspace.
    if tracking_uri.lower().startswith("databricks"):
        raise RegistryError(
            f"the tracking URI {tracking_uri!r} is Databricks, which does not offer MLflow OSS "
            "webhooks. Poll its registry with `latentgate gate watch` instead."
        )
    if scheme in ("", "file") or len(scheme) == 1:  # one letter: a Windows drive
        raise RegistryError(
            f"the tracking URI {tracking_uri!r} is a file store, which cannot hold webhooks: "
            f"MLflow supports webhooks only on a database backend, served by `mlflow server`. "
            f"{server_hint}, or poll the registry instead with `latentgate gate watch`."
        )
    if scheme.split("+")[0] in _DATABASE_SCHEMES:
        raise RegistryError(
            f"the tracking URI {tracking_uri!r} is a database, but MLflow sends webhook "
            "deliveries only from its tracking server, for registry changes made through that "
            f"server. {server_hint}, and make registry changes through the server as well."
        )
    raise RegistryError(
        f"the tracking URI {tracking_uri!r} has scheme {scheme!r}; webhooks need the http(s) URL "
        f"of an MLflow tracking server. {server_hint}."
    )


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RegistryError(
            f"invalid receiver URL {url!r}: it needs http:// or https://, a host and the receiver "
            "path, e.g. http://127.0.0.1:8765/webhook"
        )


def _check_events(events: list[str]) -> None:
    unknown = [event for event in events if event not in MODEL_REGISTRY_EVENTS]
    if unknown or not events:
        raise RegistryError(
            f"unknown webhook event(s): {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(MODEL_REGISTRY_EVENTS)}"
        )


def explain_webhook_error(message: str, url: str) -> str:
    """Return what to do about an error MLflow reported while creating or testing a webhook."""
    text = message.lower()
    if "scheme" in text:
        return (
            f"the MLflow server rejects the URL scheme of {url}: it allows only https webhook "
            "URLs unless MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https is set for the server. "
            + SERVER_SETTINGS
        )
    if "non-public ip" in text or "not a public ip" in text:
        return (
            f"the MLflow server rejects {url} because it resolves to a loopback or private "
            "address, unless MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true is set for the server. "
            + SERVER_SETTINGS
        )
    if "connection refused" in text or "failed to establish" in text:
        return (
            f"nothing answered at {url}; start `latentgate gate serve --config gate.yaml` there "
            "first, with the same receiver host, port and path"
        )
    if "invalidtoken" in text or "decrypt" in text:
        return (
            "the MLflow server could not decrypt the webhook secret; set the same "
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY for every server process and run this command "
            "again. " + SERVER_SETTINGS
        )
    return "check the MLflow server's log. " + SERVER_SETTINGS


def _find_webhook(client, name: str):
    page_token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=page_token)
        for webhook in page:
            if webhook.name == name:
                return webhook
        page_token = page.token
        if not page_token:
            return None


def _test_delivery(client, name: str, url: str, events: list[str], secret: str):
    """Send MLflow's test delivery through a temporary webhook `name` and delete it again."""
    stale = _find_webhook(client, name)
    if stale is not None:  # left by an install that was killed
        client.delete_webhook(stale.webhook_id)
    webhook = client.create_webhook(
        name=name,
        url=url,
        events=events,
        description="LatentGate: temporary webhook of `latentgate gate install`",
        secret=secret,
    )
    try:
        return client.test_webhook(webhook.webhook_id)
    finally:
        client.delete_webhook(webhook.webhook_id)


def _delivery_fix(status: int | None, detail: str, url: str, secret_env: str) -> str:
    if status == 401:
        return (
            f"the receiver rejected the signature: give `latentgate gate serve` the same "
            f"secret as this command ({secret_env}). If they match, the MLflow server lost "
            "the secret; set MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY for it. " + SERVER_SETTINGS
        )
    if status == 404:
        return (
            f"the receiver does not serve the path of {url}; use the receiver's host, port "
            "and path from the gate file (receiver: host, port, path)."
        )
    return explain_webhook_error(detail, url)


def install_webhook(
    tracking_uri: str,
    url: str,
    events: list[str] | None = None,
    name: str = DEFAULT_WEBHOOK_NAME,
    secret_env: str = DEFAULT_SECRET_ENV,
) -> InstallResult:
    """Check the URL and secret with a test delivery, then create or update the gate's webhook.

    The test delivery goes through a temporary webhook (`NAME-check`), deleted afterwards, so
    that a wrong URL or secret neither leaves an active webhook behind nor overwrites a
    working one. Raises RegistryError with the server settings to change when MLflow rejects
    the webhook or the test delivery fails.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    events = list(events or DEFAULT_WEBHOOK_EVENTS)
    check_webhook_store(tracking_uri)
    _check_url(url)
    _check_events(events)
    secret = read_secret(secret_env, "--secret-env")

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        result = _test_delivery(client, f"{name}-check", url, events, secret)
        if not result.success:
            detail = result.error_message or f"HTTP {result.response_status}: {result.response_body}"
            raise RegistryError(
                f"the test delivery to {url} failed: {detail}. Fix: "
                f"{_delivery_fix(result.response_status, detail, url, secret_env)} Webhook "
                f"{name!r} was not changed; run this command again when the receiver answers."
            )
        existing = _find_webhook(client, name)
        if existing is None:
            webhook = client.create_webhook(
                name=name,
                url=url,
                events=events,
                description="LatentGate: evaluate model versions on registry events",
                secret=secret,
            )
        else:
            webhook = client.update_webhook(
                existing.webhook_id, url=url, events=events, secret=secret, status="ACTIVE"
            )
    except MlflowException as error:
        raise RegistryError(
            f"MLflow at {tracking_uri} did not accept the webhook for {url}: {error.message}. "
            + explain_webhook_error(error.message, url)
        ) from None
    log.info("%s webhook %r (%s)", "created" if existing is None else "updated", name,
             webhook.webhook_id)
    return InstallResult(
        webhook_id=webhook.webhook_id,
        name=name,
        url=url,
        events=tuple(events),
        created=existing is None,
        test_event=events[0],
        test_status=result.response_status,
        test_body=result.response_body,
    )


def uninstall_webhook(tracking_uri: str, name: str = DEFAULT_WEBHOOK_NAME) -> str | None:
    """Delete the gate's webhook `name` and return its id, or None when there is none.

    Also deletes a temporary `NAME-check` webhook left by an install that was killed.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_webhook_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        leftover = _find_webhook(client, f"{name}-check")
        if leftover is not None:
            client.delete_webhook(leftover.webhook_id)
        webhook = _find_webhook(client, name)
        if webhook is None:
            return None
        client.delete_webhook(webhook.webhook_id)
    except MlflowException as error:
        raise RegistryError(
            f"failed to delete webhook {name!r} on MLflow at {tracking_uri}: {error.message}. "
            "Check the MLflow server's log, then run this command again."
        ) from None
    log.info("deleted webhook %r (%s)", name, webhook.webhook_id)
    return webhook.webhook_id
