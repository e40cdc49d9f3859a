"""The plugin's per-session state: resolved models, loaded suites and measured classes.

A pytest session searches each (model version, suite, class) at most once. The first request
loads the models and searches every class asked for in one batch. Later requests for the same
class, from suite items or from the `latent_probe` fixture, reuse the result. With a cache
folder, results also survive the session (see `harness.pytest_plugin.disk_cache`).

Nothing here imports torch or MLflow at module level, because pytest imports the plugin in every
session of every project installed next to LatentGate.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import LatentGateError, RegistryError

if TYPE_CHECKING:
    from harness.classifier import ResolvedModel
    from harness.evaluation import LoadedModels
    from harness.gate import CheckResult, ClassOutcome
    from harness.metrics.bootstrap import Measurement
    from harness.pytest_plugin.disk_cache import DiskCache
    from harness.suite import Suite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    """The walk of one class along its searched direction: status, measurements and GIF.

    `measurements` maps a metric name (`skin_ita_delta_deg`) to its mean over samples and the
    bootstrap interval of that mean. It is empty when the search stopped (`status` "error").
    """

    # Left out of the repr, which pytest prints when an assertion on a result fails.
    model: ResolvedModel = field(repr=False)
    suite: Suite = field(repr=False)
    class_name: str
    status: str  # "ok", or "error" when the search stopped, with the reason in `message`
    message: str
    measurements: Mapping[str, Measurement]
    gif: Path | None  # the walk as an animated grid; None when the search stopped
    source: str = "search"  # "search", or "cache" when read from the cache folder

    @property
    def outcome(self) -> ClassOutcome:
        from harness.gate import ClassOutcome

        error = None if self.status == "ok" else self.message or "the search stopped"
        return ClassOutcome(measurements=dict(self.measurements), error=error)

    @property
    def checks(self) -> list[CheckResult]:
        """The suite's expectations for this class, each evaluated on these measurements."""
        from harness.gate import evaluate_check

        expectations = self.suite.expectations.get(self.class_name, ())
        return [evaluate_check(self.class_name, e, self.outcome) for e in expectations]


class Probe:
    """One model version with one suite's settings; `measure` walks a class's direction."""

    def __init__(self, session: ProbeSession, model: ResolvedModel, suite: Suite) -> None:
        self._session = session
        self.model = model
        self.suite = suite

    def measure(self, class_name: str) -> ProbeResult:
        """Search, walk and measure `class_name`, or return the result found earlier.

        Any class of the classifier works, also one the suite does not list; the suite then
        supplies only the search settings, and `checks` is empty.
        """
        with fail_on_input_error():
            return self._session.measure(self.model, self.suite, [class_name])[class_name]


@contextmanager
def fail_on_input_error() -> Iterator[None]:
    """Turn a LatentGateError into a test failure that shows only its message."""
    import pytest

    try:
        yield
    except LatentGateError as error:
        # `from None`, so that pytest does not print the same message again as the cause.
        raise pytest.fail.Exception(f"latentgate: {error}", pytrace=False) from None


@dataclass
class _Counts:
    searched: int = 0  # classes whose direction this session searched
    from_cache: int = 0  # classes read from the cache folder


class _WarningRecorder(logging.Handler):
    """Keeps the WARNING and higher records that LatentGate logs while it loads and searches.

    Suite items drop their captured output so that a failure shows only the check. These
    warnings (a guessed identity preprocessing, class names that differ between suite and model)
    are printed in the terminal summary instead, each once.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = f"{record.name}: {record.getMessage()}"
        if message not in self.messages:
            self.messages.append(message)


class ProbeSession:
    """Models, suites and measurements of one pytest session, each computed once.

    `tracking_uri` None means MLflow's own default (MLFLOW_TRACKING_URI, else
    `sqlite:///mlflow.db`). GIFs go to `artifacts_dir`, created on first use; None makes a
    temporary folder that is kept after the session so that reported paths stay valid.
    """

    def __init__(
        self,
        default_model: str | None = None,
        tracking_uri: str | None = None,
        device: str = "cpu",
        artifacts_dir: Path | None = None,
        disk_cache: DiskCache | None = None,
        root: Path | None = None,
    ) -> None:
        self.default_model = default_model  # the reference suite items evaluate
        self._tracking_uri = tracking_uri
        self.device = device
        self._artifacts_dir = artifacts_dir
        self.disk_cache = disk_cache
        self._root = root or Path.cwd()
        self.counts = _Counts()
        self.warnings = _WarningRecorder()
        self.results: dict[tuple[str, str, str, str], ProbeResult] = {}
        self._models: dict[str, ResolvedModel | LatentGateError] = {}
        self._suites: dict[Path, Suite | LatentGateError] = {}
        self._loaded: dict[tuple[str, str, str], LoadedModels | LatentGateError] = {}
        self._planned: dict[tuple[str, str], list[str]] = {}
        self._checksums: dict[Path, str] = {}

    # --- inputs ---------------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        import mlflow

        from harness.classifier import check_registry_uri

        uri = self._tracking_uri or mlflow.get_tracking_uri()
        check_registry_uri(uri)
        return uri

    def resolve(self, reference: str) -> ResolvedModel:
        """Resolve a model reference once per session; raise the same error on every request."""
        from harness.classifier import resolve_model

        return _cached(self._models, reference, lambda: resolve_model(reference, self.tracking_uri))

    def suite(self, path: str | Path) -> Suite:
        """Load a suite once per session; a relative path resolves against pytest's rootdir."""
        from harness.suite import load_suite

        resolved = (self._root / Path(path).expanduser()).resolve()
        return _cached(self._suites, resolved, lambda: load_suite(resolved))

    def probe(self, model_reference: str | None, suite_path: str | Path) -> Probe:
        """Return a probe of a model (None: the session's default model) under a suite."""
        reference = model_reference or self.default_model
        if reference is None:
            raise RegistryError(
                "latent_probe(None, ...) needs a default model: pass --latentgate-model "
                "(e.g. --latentgate-model hair:2), set latentgate_model in the pytest "
                "configuration, or name the model in latent_probe(MODEL, SUITE)"
            )
        return Probe(self, self.resolve(reference), self.suite(suite_path))

    def plan(self, suite: Suite, class_names: Iterable[str]) -> None:
        """Record classes that selected suite items will need, so one search covers them all."""
        planned = self._planned.setdefault(_suite_key(suite), [])
        planned.extend(name for name in class_names if name not in planned)

    def planned_classes(self, suite: Suite) -> list[str]:
        return list(self._planned.get(_suite_key(suite), []))

    # --- measurement ----------------------------------------------------------------------

    def measure(
        self, model: ResolvedModel, suite: Suite, class_names: Sequence[str]
    ) -> dict[str, ProbeResult]:
        """Return the results of `class_names`, searching in one batch only those not known yet."""
        names = list(dict.fromkeys(class_names))
        missing = [name for name in names if _key(model, suite, name) not in self.results]
        if missing and self.disk_cache is not None:
            missing = [name for name in missing if not self._read_cached(model, suite, name)]
        if missing:
            self._search(model, suite, missing)
        return {name: self.results[_key(model, suite, name)] for name in names}

    def _search(self, model: ResolvedModel, suite: Suite, class_names: list[str]) -> None:
        # Looked up on the module at call time, so that a test can count the searches.
        from harness import evaluation
        from harness.report import walk_gif_frames, write_gif

        loaded = self._load(model, suite)
        log.info("searching %s of %s under suite %s", ", ".join(class_names), model.uri, suite.path)
        with self._recording_warnings():
            measured = evaluation.measure_classes(loaded, class_names, progress=False)
        self.counts.searched += len(class_names)

        folder = self._gif_folder(model, suite)
        for name in class_names:
            class_measurement = measured[name]
            direction = class_measurement.direction
            gif = None
            if class_measurement.frames is not None:
                gif = folder / f"{safe_name(name)}.gif"
                write_gif(gif, walk_gif_frames(class_measurement.frames))
            result = ProbeResult(
                model=model,
                suite=suite,
                class_name=name,
                status=direction.status,
                message=direction.message,
                measurements=dict(class_measurement.outcome.measurements),
                gif=gif,
            )
            self.results[_key(model, suite, name)] = result
            if self.disk_cache is not None and result.status == "ok":
                # A stopped search is not stored, so the next session tries it again.
                self.disk_cache.store(self._cache_key(model, suite, name), result)

    def _load(self, model: ResolvedModel, suite: Suite) -> LoadedModels:
        from harness.evaluation import load_models

        def load() -> LoadedModels:
            with self._recording_warnings():
                return load_models(model, suite, self.tracking_uri, self.device)

        return _cached(self._loaded, (model.uri, *_suite_key(suite)), load)

    def _read_cached(self, model: ResolvedModel, suite: Suite, class_name: str) -> bool:
        assert self.disk_cache is not None
        entry = self.disk_cache.load(self._cache_key(model, suite, class_name))
        if entry is None:
            return False
        self.results[_key(model, suite, class_name)] = ProbeResult(
            model=model,
            suite=suite,
            class_name=class_name,
            status="ok",
            message="",
            measurements=entry.measurements,
            gif=entry.gif,
            source="cache",
        )
        self.counts.from_cache += 1
        return True

    def _cache_key(self, model: ResolvedModel, suite: Suite, class_name: str) -> dict[str, object]:
        return {
            "model": {"name": model.name, "version": model.version, "run_id": model.run_id},
            "suite_sha256": suite.sha256,
            "generator_sha256": self._checksum(suite.generator),
            "identity_sha256": self._checksum(suite.identity),
            "class": class_name,
            "device": self.device,
        }

    def _checksum(self, path: Path) -> str:
        from harness.pytest_plugin.disk_cache import source_sha256

        if path not in self._checksums:
            self._checksums[path] = source_sha256(path)
        return self._checksums[path]

    # --- files and logs -------------------------------------------------------------------

    @property
    def artifacts_dir(self) -> Path:
        if self._artifacts_dir is None:
            self._artifacts_dir = Path(tempfile.mkdtemp(prefix="latentgate-pytest-"))
        return self._artifacts_dir

    @property
    def artifacts_dir_used(self) -> Path | None:
        """The GIF folder, or None when no GIF has been written yet."""
        return self._artifacts_dir if self.counts.searched else None

    def _gif_folder(self, model: ResolvedModel, suite: Suite) -> Path:
        folder = (
            self.artifacts_dir
            / f"{safe_name(model.name)}-v{model.version}"
            / f"{safe_name(suite.name)}-{suite.sha256[:12]}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @contextmanager
    def _recording_warnings(self) -> Iterator[None]:
        logger = logging.getLogger("harness")
        logger.addHandler(self.warnings)
        try:
            yield
        finally:
            logger.removeHandler(self.warnings)


def _suite_key(suite: Suite) -> tuple[str, str]:
    # The path as well as the checksum, because two copies of one suite in different folders
    # can resolve relative weight paths to different files.
    return (str(suite.path), suite.sha256)


def _key(model: ResolvedModel, suite: Suite, class_name: str) -> tuple[str, str, str, str]:
    return (model.uri, *_suite_key(suite), class_name)


def _cached(store: dict, key: object, compute) -> object:
    """Return `store[key]`, computing it once; a LatentGateError is stored and raised again."""
    if key not in store:
        try:
            store[key] = compute()
        except LatentGateError as error:
            store[key] = error
    value = store[key]
    if isinstance(value, LatentGateError):
        raise value
    return value


_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """Return `text` with every run of characters unsafe in a file name replaced by `_`."""
    return _UNSAFE_FILE_CHARACTERS.sub("_", text) or "_"
