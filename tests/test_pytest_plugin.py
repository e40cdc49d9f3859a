"""The pytest plugin, run through pytester as a user's project would run it.

Runs that search directions use the toy world of `toy_models` in a subprocess, because torch
and MLflow cannot be imported afresh in one process for every in-process run. Collection-only
runs stay in process. The expected results: the toy classifier's `red` direction raises p(red) by
more than 0.3, and no probability gain can exceed 1, so `target_prob_gain > 1` always fails.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import mlflow  # noqa: F401
import pytest

# Imported here so that in-process runs find them loaded and do not import them again.
import harness.gate  # noqa: F401
import harness.suite  # noqa: F401
from harness.gate import ClassOutcome, evaluate_check
from harness.metrics.bootstrap import Measurement
from harness.pytest_plugin.collection import format_check_failure, looks_like_suite
from harness.pytest_plugin.disk_cache import DiskCache
from harness.suite import parse_expectation
from toy_models import REPO, write_suite

pytest_plugins = ["pytester"]

TOY_CLASSES = """\
  red:
    expect:
      - {check: "identity_cos_sim >= -1", statistic: interval}
  blue:
    expect: ["target_prob_gain > 1"]"""

TOY_ITEMS = [
    "suite.yaml::red::target_prob_gain >= 0.3",
    "suite.yaml::red::identity_cos_sim >= -1 (interval)",
    "suite.yaml::blue::target_prob_gain > 1",
]

# Counts the searches of a subprocess run: one JSON line per call of measure_classes.
COUNTING_CONFTEST = """\
import json
from pathlib import Path

from harness import evaluation

_measure_classes = evaluation.measure_classes


def _counting_measure_classes(loaded, class_names=None, progress=True):
    with open(Path(__file__).parent / "searches.jsonl", "a") as log:
        log.write(json.dumps({"model": loaded.model.uri, "classes": list(class_names)}) + "\\n")
    return _measure_classes(loaded, class_names, progress)


evaluation.measure_classes = _counting_measure_classes
"""

PROBE_TEST = """\
SUITE = {suite!r}


def test_red_probe(latent_probe):
    red = latent_probe("colour@champion", SUITE).measure("red")
    again = latent_probe("models:/colour/1", SUITE).measure("red")
    assert again is red
    assert red.status == "ok", red.message
    gain = red.measurements["target_prob_gain"]
    assert gain.ci_low <= gain.mean <= gain.ci_high
    assert gain.mean >= 0.3
    assert red.gif.is_file()
    assert [check.status for check in red.checks] == ["pass", "pass"]
"""


@pytest.fixture
def toy_project(store, pytester):
    """A pytester folder with the toy suite, a latent_probe test and the search counter."""
    _, uri = store
    suite = write_suite(pytester.path, classes=TOY_CLASSES)
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile(test_probe=PROBE_TEST.format(suite=str(suite)))
    return suite, uri


def run_toy(pytester, uri, *args):
    return pytester.runpytest_subprocess(
        "--latentgate-model",
        "colour:1",
        "--latentgate-tracking-uri",
        uri,
        "-W",
        "error::pytest.PytestWarning",
        "-p",
        "no:cacheprovider",
        *args,
        timeout=600,
    )


def searches(pytester) -> list[dict]:
    log = pytester.path / "searches.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def failure_block(output: str, header: str) -> list[str]:
    """Return the lines of one failure report, from its header to the next section."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = start + 1
    while end < len(lines) and not re.match(r"^(=|_){3,}", lines[end]):
        end += 1
    return lines[start:end]


# --- collection, in process ---------------------------------------------------------------


def test_plain_project_untouched(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    assert 1 + 1 == 2\n")
    pytester.makefile(".yaml", ci="version: 2\njobs:\n  build: {}\n")
    pytester.makefile(".yml", data="version: 1\nclasses:\n  red: {}\n")

    result = pytester.runpytest_inprocess("-W", "error", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins: *latentgate-*", "collected 1 item"])
    result.stdout.no_fnmatch_line("*= latentgate =*")


def test_other_yaml_ignored_with_model(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    pytester.makefile(".yaml", ci="version: 2\njobs:\n  build: {}\n")

    result = pytester.runpytest_inprocess(
        "--latentgate-model", "colour:1", "-W", "error", "-p", "no:cacheprovider"
    )

    result.assert_outcomes(passed=1)


def test_suite_items_named_by_class_and_expectation(pytester):
    write_suite(pytester.path, classes=TOY_CLASSES)

    result = pytester.runpytest_inprocess(
        "suite.yaml", "--latentgate-model", "colour:1", "--collect-only", "-q", "-W", "error"
    )

    assert result.ret == 0
    collected = [line for line in result.stdout.lines if line.startswith("suite.yaml::")]
    assert collected == TOY_ITEMS
    result.stdout.fnmatch_lines(["3 tests collected*"])


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("red", TOY_ITEMS[:2]),
        ("blue", TOY_ITEMS[2:]),
        ("identity_cos", TOY_ITEMS[1:2]),
        ("target_prob_gain and not blue", TOY_ITEMS[:1]),
    ],
)
def test_keyword_selects_items(pytester, keyword, expected):
    write_suite(pytester.path, classes=TOY_CLASSES)

    result = pytester.runpytest_inprocess(
        "suite.yaml", "--latentgate-model", "colour:1", "--collect-only", "-q", "-k", keyword
    )

    collected = [line for line in result.stdout.lines if line.startswith("suite.yaml::")]
    assert collected == expected


def test_model_from_ini_option(pytester):
    write_suite(pytester.path, classes=TOY_CLASSES)
    pytester.makeini("[pytest]\nlatentgate_model = colour:1\n")

    result = pytester.runpytest_inprocess("suite.yaml", "--collect-only", "-q")

    collected = [line for line in result.stdout.lines if line.startswith("suite.yaml::")]
    assert collected == TOY_ITEMS


def test_suite_without_model_is_collection_error(pytester):
    write_suite(pytester.path, classes=TOY_CLASSES)

    result = pytester.runpytest_inprocess("suite.yaml")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*suite.yaml is a LatentGate suite, but no model was given*"])
    assert "Traceback" not in result.stdout.str()


def test_invalid_suite_is_collection_error(pytester):
    pytester.makefile(
        ".yaml", broken='version: 1\nsearch: {steps: "100"}\nclasses:\n  red: {}\n'
    )

    result = pytester.runpytest_inprocess("broken.yaml", "--latentgate-model", "colour:1")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting broken.yaml*",
            "invalid suite file *broken.yaml*",
            "*broken.yaml:2: search.steps: expected an integer, got the string '100'*",
        ]
    )
    output = result.stdout.str()
    assert "Traceback" not in output
    assert "harness/" not in output


def test_bad_model_reference_is_usage_error(pytester, tmp_path):
    write_suite(pytester.path, classes=TOY_CLASSES)

    result = pytester.runpytest_inprocess(
        "suite.yaml",
        "--latentgate-model",
        "colour",
        "--latentgate-tracking-uri",
        f"sqlite:///{tmp_path / 'empty.db'}",
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --latentgate-model / latentgate_model: invalid model reference 'colour': "
            "expected NAME:VERSION, NAME@ALIAS, models:/NAME/VERSION or models:/NAME@ALIAS, for "
            "example hair:2 or hair@champion."
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_probe_without_model_one_line(pytester):
    pytester.makepyfile(
        test_probe="def test_probe(latent_probe):\n    latent_probe(None, 'suite.yaml')\n"
    )

    result = pytester.runpytest_inprocess()

    result.assert_outcomes(failed=1)
    block = failure_block(result.stdout.str(), "latentgate: ")
    assert block == [
        "latentgate: latent_probe(None, ...) needs a default model: pass --latentgate-model "
        "(e.g. --latentgate-model hair:2), set latentgate_model in the pytest configuration, "
        "or name the model in latent_probe(MODEL, SUITE)"
    ]


def test_cache_option_rejects_file(pytester):
    pytester.makefile(".txt", cache="not a folder")

    result = pytester.runpytest_inprocess("--latentgate-cache", "cache.txt")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--latentgate-cache cache.txt: * is a file, not a folder*"])


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("suite.yaml", "version: 1\nclasses:\n  red: {}\n", True),
        ("suite.yml", "# comment\nversion: 1\nname: x\nclasses: [unclosed\n", True),
        ("ci.yaml", "version: 2\njobs: {}\n", False),
        ("nested.yaml", "tool:\n  version: 1\n  classes: {}\n", False),
        ("suite.json", "version: 1\nclasses: {}\n", False),
    ],
)
def test_looks_like_suite(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)

    assert looks_like_suite(path) is expected


# --- failure text and cache, without pytest runs ----------------------------------------------


def test_failure_text_of_abs_check():
    measurement = Measurement(mean=-12.4, ci_low=-14.7, ci_high=-10.1, num_samples=16, confidence=0.95)
    expectation = parse_expectation("abs(skin_ita_delta_deg) <= 8")
    check = evaluate_check("long_braids", expectation, ClassOutcome({"skin_ita_delta_deg": measurement}))

    text = format_check_failure(check, "models:/hair/2", Path("/gifs/long_braids.gif"))

    assert text.splitlines() == [
        "long_braids: abs(skin_ita_delta_deg) <= 8 failed on models:/hair/2",
        "  measured:  mean 12.4 (signed -12.4), 95% CI [10.1, 14.7], n=16",
        "  threshold: 8 (passes when the mean of abs(skin_ita_delta_deg) is <= 8; neither "
        "direction is better)",
        "  GIF:       /gifs/long_braids.gif",
    ]


def test_failure_text_of_stopped_search():
    expectation = parse_expectation("target_prob_gain >= 0.5")
    outcome = ClassOutcome(error="non-finite loss at step 3")
    check = evaluate_check("afro", expectation, outcome)

    text = format_check_failure(check, "models:/hair/2", None, outcome.error)

    assert text == (
        "afro: target_prob_gain >= 0.5: error on models:/hair/2: no measurement of "
        "target_prob_gain because the class stopped with an error: non-finite loss at step 3"
    )


class _StoredResult:
    def __init__(self, measurements, gif):
        self.measurements = measurements
        self.gif = gif


def test_disk_cache_round_trip(tmp_path):
    gif = tmp_path / "walk.gif"
    gif.write_bytes(b"GIF89a")
    measurements = {
        "target_prob_gain": Measurement(0.61, 0.25, 0.99, 4, 0.95),
        "skin_L_delta": Measurement(math.nan, math.nan, math.nan, 4, 0.95),
    }
    cache = DiskCache(tmp_path / "cache")
    key = {"model": {"name": "colour", "version": 1, "run_id": "abc"}, "class": "red"}

    cache.store(key, _StoredResult(measurements, gif))
    entry = cache.load(key)

    assert entry is not None
    assert entry.measurements["target_prob_gain"] == measurements["target_prob_gain"]
    assert math.isnan(entry.measurements["skin_L_delta"].mean)
    assert entry.gif.read_bytes() == b"GIF89a"
    assert cache.load({**key, "class": "blue"}) is None
    assert cache.load({**key, "model": {"name": "colour", "version": 2, "run_id": "abc"}}) is None


def test_disk_cache_ignores_corrupt_entry(tmp_path, caplog):
    cache = DiskCache(tmp_path)
    key = {"class": "red"}
    cache.store(key, _StoredResult({"target_prob_gain": Measurement(0.6, 0.2, 0.9, 4)}, None))
    (entry_file,) = tmp_path.glob("*.json")
    entry_file.write_text("{not json")

    assert cache.load(key) is None
    assert "ignoring the unreadable cache entry" in caplog.text


# --- searches, in a subprocess ------------------------------------------------------------


def test_suite_run_reports_pass_and_fail(toy_project, pytester):
    suite, uri = toy_project

    result = run_toy(pytester, uri, "suite.yaml", "test_probe.py", "-v")

    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "suite.yaml::red::target_prob_gain >= 0.3 PASSED*",
            "suite.yaml::red::identity_cos_sim >= -1 (interval) PASSED*",
            "suite.yaml::blue::target_prob_gain > 1 FAILED*",
            "test_probe.py::test_red_probe PASSED*",
        ]
    )
    # One search covered both classes of the suite and the probe test's two requests.
    assert searches(pytester) == [{"model": "models:/colour/1", "classes": ["red", "blue"]}]

    block = failure_block(result.stdout.str(), "blue: target_prob_gain > 1 failed")
    assert block[0] == "blue: target_prob_gain > 1 failed on models:/colour/1"
    measured = re.fullmatch(
        r"  measured:  mean (\S+), 95% CI \[(\S+), (\S+)\], n=4", block[1]
    )
    assert measured, block[1]
    mean, low, high = (float(value) for value in measured.groups())
    assert low <= mean <= high <= 1
    assert block[2] == (
        "  threshold: 1 (passes when the mean of target_prob_gain is > 1; higher is better)"
    )
    gif = Path(block[3].removeprefix("  GIF:       "))
    assert gif.name == "blue.gif"
    assert gif.is_file()
    assert len(block) == 4  # no traceback, no captured output


def test_cache_dir_reused_next_session(toy_project, pytester):
    suite, uri = toy_project
    cache = pytester.path / "latentgate-cache"

    first = run_toy(pytester, uri, "suite.yaml", "--latentgate-cache", str(cache))
    second = run_toy(pytester, uri, "suite.yaml", "test_probe.py", "--latentgate-cache", str(cache))

    first.assert_outcomes(passed=2, failed=1)
    second.assert_outcomes(passed=3, failed=1)
    assert searches(pytester) == [{"model": "models:/colour/1", "classes": ["red", "blue"]}]
    header = "blue: target_prob_gain > 1 failed"
    first_block = failure_block(first.stdout.str(), header)
    second_block = failure_block(second.stdout.str(), header)
    assert second_block[1] == first_block[1]  # the same measured values
    cached_gif = Path(second_block[3].removeprefix("  GIF:       "))
    assert cached_gif.parent == cache
    assert cached_gif.is_file()
    second.stdout.fnmatch_lines([f"searched 0 classes, read 2 from the cache {cache}"])


def test_mlflow_run_logged_on_request(toy_project, pytester):
    from mlflow.tracking import MlflowClient

    suite, uri = toy_project
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    result = run_toy(pytester, uri, "suite.yaml", "-k", "blue", "--latentgate-mlflow")

    result.assert_outcomes(failed=1, deselected=2)
    # -k leaves only blue's item, so only blue is searched.
    assert searches(pytester) == [{"model": "models:/colour/1", "classes": ["blue"]}]
    match = re.search(r"^MLflow run (\w+) in ", result.stdout.str(), re.MULTILINE)
    assert match, result.stdout.str()
    run = client.get_run(match.group(1))
    assert run.info.status == "FINISHED"
    assert run.data.params["models"] == "models:/colour/1"
    assert run.data.metrics["tests_failed"] == 1
    assert run.data.metrics["tests_passed"] == 0
    assert 0 < run.data.metrics["colour.v1.colours.blue.target_prob_gain"] <= 1
    assert not any(key.startswith("colour.v1.colours.red.") for key in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "gifs/colour-v1/colours")}
    assert artifacts == {"gifs/colour-v1/colours/blue.gif"}
    tags = client.get_model_version("colour", "1").tags
    assert "latentgate.verdict" not in tags  # a pytest session writes no verdict


def test_mlflow_off_by_default(toy_project, pytester):
    from mlflow.tracking import MlflowClient

    suite, uri = toy_project
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("latentgate")
    runs_before = (
        len(client.search_runs([experiment.experiment_id])) if experiment is not None else 0
    )

    result = run_toy(pytester, uri, "suite.yaml", "-k", "red and target")

    result.assert_outcomes(passed=1, deselected=2)
    experiment = client.get_experiment_by_name("latentgate")
    runs_after = (
        len(client.search_runs([experiment.experiment_id])) if experiment is not None else 0
    )
    assert runs_after == runs_before
    assert "MLflow run" not in result.stdout.str()


# --- the demo world's expected results ---------------------------------------------------------

DEMO_SUITE = REPO / "suites" / "hair.yaml"
DEMO_MANIFEST = REPO / "weights" / "demo" / "MANIFEST.json"


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """A sqlite registry with the demo classifiers as `hair` versions 1 to 3."""
    missing = [str(path) for path in (DEMO_MANIFEST, DEMO_SUITE) if not path.is_file()]
    if missing:
        pytest.skip(f"the demo world is not built yet: missing {', '.join(missing)}")
    from harness.demo.registry import setup_demo_registry

    uri = f"sqlite:///{tmp_path_factory.mktemp('demo-store') / 'mlflow.db'}"
    setup_demo_registry(uri)
    return uri


def run_demo(pytester, uri, model, *args):
    return pytester.runpytest_subprocess(
        str(DEMO_SUITE),
        "--latentgate-model",
        model,
        "--latentgate-tracking-uri",
        uri,
        "-p",
        "no:cacheprovider",
        *args,
        timeout=1200,
    )


def test_demo_suite_items(demo_store, pytester):
    from harness.suite import load_suite

    suite = load_suite(DEMO_SUITE)

    result = run_demo(pytester, demo_store, "hair:1", "--collect-only", "-q", "-W", "error")

    collected = [line for line in result.stdout.lines if "hair.yaml::" in line]
    assert len(collected) == sum(len(e) for e in suite.expectations.values())
    assert [line.split("::")[1] for line in collected[:1]] == [suite.class_names[0]]
    assert {line.split("::")[1] for line in collected} == set(suite.class_names)
    assert any(re.search(r"hair\.yaml::long_braids::.*skin_ita_delta_deg", line) for line in collected)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "outcome"), [("hair:1", "PASSED"), ("hair:2", "FAILED")])
def test_demo_long_braids_skin_tone(demo_store, pytester, model, outcome):
    result = run_demo(pytester, demo_store, model, "-k", "long_braids and skin_ita", "-v")

    result.stdout.fnmatch_lines([f"*hair.yaml::long_braids::*skin_ita_delta_deg* {outcome}*"])
    if outcome == "FAILED":
        result.stdout.fnmatch_lines(
            [
                "long_braids: *skin_ita_delta_deg* failed on models:/hair/2",
                "  measured:  mean *, 95% CI [[]*, *[]], n=*",
                "  threshold: *",
                "  GIF:       *long_braids.gif",
            ]
        )
