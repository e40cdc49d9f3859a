"""pytest plugin: classifier behaviour as pytest tests.

pytest loads it through the `pytest11` entry point `latentgate` when the package is installed.
It adds two ways to test a registered classifier:

- the `latent_probe` fixture, for assertions in Python:

      def test_braids_keep_skin_tone(latent_probe):
          braids = latent_probe("hair:2", "suites/hair.yaml").measure("long_braids")
          assert braids.status == "ok", braids.message
          assert abs(braids.measurements["skin_ita_delta_deg"].mean) <= 8

- suite files as tests: with a model given (`--latentgate-model hair:2` or the ini option
  `latentgate_model`), each `.yaml`/`.yml` file with top-level `version` and `classes` keys
  becomes one test per class and expectation (`harness.pytest_plugin.collection`).

A session searches each (model version, suite, class) once and reuses the result. With
`--latentgate-cache DIR`, results also survive the session. Collection reads suite files only,
and torch and MLflow are imported when a suite item or a `latent_probe` call first needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import LatentGateError
from harness.pytest_plugin.collection import ExpectationItem, SuiteFile, looks_like_suite
from harness.pytest_plugin.disk_cache import DiskCache
from harness.pytest_plugin.session import Probe, ProbeResult, ProbeSession, fail_on_input_error

__all__ = ["Probe", "ProbeResult", "ProbeSession"]

_SESSION = pytest.StashKey[ProbeSession]()
_RECORDER_NAME = "latentgate-session-recorder"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("latentgate", "LatentGate: classifier behaviour tests")
    group.addoption(
        "--latentgate-model",
        metavar="MODEL",
        help="registered model version to test: NAME:VERSION, NAME@ALIAS, models:/NAME/VERSION "
        "or models:/NAME@ALIAS. With it, suite files (.yaml with top-level version and classes "
        "keys) are collected as tests; it is also latent_probe's default model. "
        "Ini: latentgate_model.",
    )
    group.addoption(
        "--latentgate-tracking-uri",
        metavar="URI",
        help="MLflow tracking and registry URI (default: MLFLOW_TRACKING_URI, else MLflow's "
        "default sqlite:///mlflow.db in the working folder). Ini: latentgate_tracking_uri.",
    )
    group.addoption(
        "--latentgate-device",
        metavar="DEVICE",
        help="torch device for loading and searching, e.g. cpu or cuda (default: cpu). "
        "Ini: latentgate_device.",
    )
    group.addoption(
        "--latentgate-cache",
        metavar="DIR",
        help="keep measured classes in DIR and reuse them in later sessions; entries are keyed "
        "by model version and run, the checksums of suite, generator and identity model, and "
        "the LatentGate version (default: off). Ini: latentgate_cache.",
    )
    group.addoption(
        "--latentgate-artifacts",
        metavar="DIR",
        help="folder for each class's walk GIF (default: a new temporary folder, kept after "
        "the session). Ini: latentgate_artifacts.",
    )
    group.addoption(
        "--latentgate-mlflow",
        action="store_true",
        default=None,
        help="log the session's LatentGate measurements and test outcomes to one MLflow run "
        "(default: off). Ini: latentgate_mlflow.",
    )
    for name, help_text in (
        ("latentgate_model", "registered model version whose suite files are collected"),
        ("latentgate_tracking_uri", "MLflow tracking and registry URI"),
        ("latentgate_device", "torch device for loading and searching (default: cpu)"),
        ("latentgate_cache", "folder that keeps measured classes across sessions"),
        ("latentgate_artifacts", "folder for each class's walk GIF"),
    ):
        parser.addini(name, help_text, default="")
    parser.addini(
        "latentgate_mlflow", "log LatentGate results to one MLflow run", type="bool", default=False
    )


def pytest_configure(config: pytest.Config) -> None:
    cache_dir = _folder_setting(config, "latentgate_cache")
    default_model = _setting(config, "latentgate_model")
    if default_model is not None:
        _check_model_reference(default_model)
    config.stash[_SESSION] = ProbeSession(
        default_model=default_model,
        tracking_uri=_setting(config, "latentgate_tracking_uri"),
        device=_setting(config, "latentgate_device") or "cpu",
        artifacts_dir=_folder_setting(config, "latentgate_artifacts"),
        disk_cache=None if cache_dir is None else DiskCache(cache_dir),
        root=config.rootpath,
    )
    config.pluginmanager.register(
        SessionRecorder(config, config.stash[_SESSION]), _RECORDER_NAME
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    recorder = config.pluginmanager.get_plugin(_RECORDER_NAME)
    if recorder is not None:
        config.pluginmanager.unregister(recorder)


def _setting(config: pytest.Config, name: str) -> str | None:
    """Return an option's value from the command line, else from the ini file, else None."""
    value = config.getoption(name)
    if value is None:
        value = config.getini(name)
    return value or None


def _check_model_reference(text: str) -> None:
    """Raise UsageError when `--latentgate-model` is not a model reference at all.

    Only the form is checked here. Whether the model exists is checked when a test first
    requests it.
    """
    from harness.classifier.reference import parse_model_reference

    try:
        parse_model_reference(text)
    except LatentGateError as error:
        raise pytest.UsageError(f"--latentgate-model / latentgate_model: {error}") from None


def _folder_setting(config: pytest.Config, name: str) -> Path | None:
    """Return a folder option as an absolute path; raise UsageError when it is a file.

    A command-line value is relative to the folder pytest was started in, an ini value to the
    ini file's folder.
    """
    value = config.getoption(name)
    base = config.invocation_params.dir
    if value is None:
        value = config.getini(name)
        base = config.inipath.parent if config.inipath else config.rootpath
    if not value:
        return None
    folder = (base / Path(value).expanduser()).resolve()
    if folder.exists() and not folder.is_dir():
        option = "--" + name.replace("_", "-")
        raise pytest.UsageError(
            f"{option} {value}: {folder} is a file, not a folder; give a folder path (it is "
            "created if missing)"
        )
    return folder


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> SuiteFile | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    config = parent.config
    session = config.stash[_SESSION]
    if session.default_model is not None:
        if not looks_like_suite(file_path):
            return None
        return SuiteFile.from_parent(parent, path=file_path, probe_session=session)

    # Without a model, YAML files are left alone. The exception is a suite named on the command
    # line, which becomes a collection error that says what is missing.
    if not (_named_on_command_line(config, file_path) and looks_like_suite(file_path)):
        return None
    problem = (
        f"{file_path} is a LatentGate suite, but no model was given to test against it: pass "
        "--latentgate-model MODEL (e.g. --latentgate-model hair:2) or set latentgate_model in "
        "the pytest configuration"
    )
    return SuiteFile.from_parent(parent, path=file_path, probe_session=session, problem=problem)


def _named_on_command_line(config: pytest.Config, file_path: Path) -> bool:
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False
    target = file_path.resolve()
    for argument in config.args:
        path_part = argument.split("::", 1)[0]
        if (config.invocation_params.dir / path_part).resolve() == target:
            return True
    return False


@pytest.fixture(scope="session")
def latent_probe(pytestconfig: pytest.Config) -> Callable[[str | None, str | Path], Probe]:
    """Open a probe of a registered model version under a suite's settings.

    `latent_probe(MODEL, SUITE)` takes a model reference (`hair:2`, `hair@champion`,
    `models:/hair/2`; None means `--latentgate-model`) and a suite path (relative paths resolve
    against pytest's rootdir). `.measure(CLASS)` returns a `ProbeResult` with `.status`,
    `.measurements[METRIC].mean`, `.ci_low`, `.ci_high`, `.gif` and `.checks`. A bad reference,
    suite or model fails the test with LatentGate's one-line message.
    """
    session = pytestconfig.stash[_SESSION]

    def open_probe(model: str | None, suite: str | Path) -> Probe:
        with fail_on_input_error():
            return session.probe(model, suite)

    return open_probe


class SessionRecorder:
    """Hooks that follow one session: which classes to search, outcomes, MLflow, summary."""

    def __init__(self, config: pytest.Config, probe_session: ProbeSession) -> None:
        self.config = config
        self.probe_session = probe_session
        self.tracked: set[str] = set()  # node IDs of the tests that use LatentGate
        self.outcomes: dict[str, str] = {}  # node ID -> passed, failed, error or skipped
        self.mlflow_line: str | None = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            if isinstance(item, ExpectationItem):
                self.probe_session.plan(item.suite, [item.class_name])
                self.tracked.add(item.nodeid)
            elif "latent_probe" in getattr(item, "fixturenames", ()):
                self.tracked.add(item.nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.tracked:
            return
        if report.when == "call":
            self.outcomes[report.nodeid] = report.outcome
        elif report.failed:
            self.outcomes[report.nodeid] = "error"
        elif report.skipped:
            self.outcomes[report.nodeid] = "skipped"

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not _flag(self.config, "latentgate_mlflow"):
            return
        if not self.probe_session.results:
            self.mlflow_line = "no LatentGate measurements in this session; no MLflow run logged"
            return
        from harness.pytest_plugin.mlflow_log import log_session_run

        try:
            run_id = log_session_run(
                self.probe_session, self.outcomes, int(exitstatus), pytest.__version__
            )
        except Exception as error:  # noqa: BLE001 - reported in the summary and the exit code
            message = str(error) if isinstance(error, LatentGateError) else repr(error)
            self.mlflow_line = f"logging the session to MLflow failed: {message}"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
            return
        self.mlflow_line = f"MLflow run {run_id} in {self.probe_session.tracking_uri}"

    def pytest_terminal_summary(self, terminalreporter) -> None:
        session = self.probe_session
        lines = []
        counts = session.counts
        if counts.searched or counts.from_cache:
            line = f"searched {counts.searched} {'class' if counts.searched == 1 else 'classes'}"
            if session.disk_cache is not None:
                line += f", read {counts.from_cache} from the cache {session.disk_cache.folder}"
            lines.append(line)
        if session.artifacts_dir_used is not None:
            lines.append(f"walk GIFs in {session.artifacts_dir_used}")
        if self.mlflow_line:
            lines.append(self.mlflow_line)
        lines += [f"warning: {message}" for message in session.warnings.messages]
        if lines:
            terminalreporter.section("latentgate")
            for line in lines:
                terminalreporter.write_line(line)


def _flag(config: pytest.Config, name: str) -> bool:
    value = config.getoption(name)
    return bool(config.getini(name)) if value is None else bool(value)
