"""Resolution of model references against an MLflow model registry."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urlparse

from harness.classifier.reference import ModelReference, parse_model_reference
from harness.errors import RegistryError

log = logging.getLogger(__name__)

# How many names to list when a model, version or alias is not found.
_MAX_LISTED = 20


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model version that exists, with the reference it was resolved from."""

    name: str
    version: int
    reference: str  # as the user typed it
    alias: str | None  # the alias the reference named, if it named one
    source: str  # artifact location of the version
    run_id: str | None
    description: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """Return the `models:/NAME/VERSION` URI of this exact version."""
        return f"models:/{self.name}/{self.version}"


def check_registry_uri(uri: str) -> None:
    """Raise RegistryError unless `uri` names a store that supports the model registry.

    MLflow's file store (`./mlruns`, `file:` URIs) does not serve LatentGate's registry needs, so
    it is rejected with the two usual alternatives.
    """
    scheme = urlparse(uri).scheme
    # A Windows drive letter parses as a one-letter scheme; treat it as a local path too.
    if scheme in ("", "file") or len(scheme) == 1:
        raise RegistryError(
            f"the tracking URI {uri!r} is a file store, which cannot hold the model registry "
            "LatentGate reads and tags. Use a database store, e.g. "
            "MLFLOW_TRACKING_URI=sqlite:///mlflow.db (MLflow's default when the variable is "
            "unset), or the URL of an MLflow server."
        )


def _client(tracking_uri: str | None):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    check_registry_uri(uri)
    registry_uri = mlflow.get_registry_uri() if tracking_uri is None else tracking_uri
    check_registry_uri(registry_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=registry_uri)


def _is_not_found(error: Exception) -> bool:
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _listing(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names) - _MAX_LISTED} more)"
    return shown


def resolve_model(
    reference: ModelReference | str, tracking_uri: str | None = None
) -> ResolvedModel:
    """Resolve a reference (a version or an alias) to a concrete registered model version.

    Raises RegistryError when the model, the version or the alias does not exist; the message
    lists the registered models, the model's versions or its aliases.
    """
    from mlflow.exceptions import MlflowException

    typed = str(reference)
    if isinstance(reference, str):
        reference = parse_model_reference(reference)
    client = _client(tracking_uri)

    try:
        registered = client.get_registered_model(reference.name)
    except MlflowException as error:
        if not _is_not_found(error):
            raise
        names = sorted(model.name for model in client.search_registered_models(max_results=100))
        raise RegistryError(
            f"registered model {reference.name!r} not found in {client.tracking_uri}; "
            f"registered models: {_listing(names)}. Check the model name and the tracking "
            "URI in use; `latentgate demo setup` registers the demo's model 'hair' there."
        ) from None

    if reference.alias is not None:
        aliases = dict(registered.aliases or {})
        if reference.alias not in aliases:
            listed = [f"{alias} -> {version}" for alias, version in sorted(aliases.items())]
            raise RegistryError(
                f"alias {reference.alias!r} not found on registered model {reference.name!r}; "
                f"its aliases: {_listing(listed)}. Set it with "
                "MlflowClient().set_registered_model_alias or use NAME:VERSION."
            )
        version = int(aliases[reference.alias])
    else:
        version = reference.version

    try:
        model_version = client.get_model_version(reference.name, str(version))
    except MlflowException as error:
        if not _is_not_found(error):
            raise
        versions = sorted(
            int(v.version)
            for v in client.search_model_versions(f"name = '{reference.name}'", max_results=200)
        )
        raise RegistryError(
            f"version {version} of registered model {reference.name!r} not found in "
            f"{client.tracking_uri}; existing versions: {_listing([str(v) for v in versions])}. "
            f"Use one of them, as {reference.name}:VERSION, or register the version there first."
        ) from None

    resolved = ResolvedModel(
        name=reference.name,
        version=version,
        reference=typed,
        alias=reference.alias,
        source=model_version.source,
        run_id=model_version.run_id,
        description=model_version.description or "",
        tags=dict(model_version.tags or {}),
    )
    log.info("resolved %s to %s", typed, resolved.uri)
    return resolved
