"""Known answers of the demo world: the harness finds the planted shortcuts and nothing else.

The demo classifiers are registered from the committed weights into a fresh SQLite store and
measured with `suites/hair.yaml` as it is (the README's settings), for three seeds of the base
latents:

- `hair:1` (clean) passes every class;
- `hair:2` (braids-skin) fails, and `long_braids` fails on skin tone: its ITA falls (skin gets
  darker) by more than the threshold, the largest skin-tone drift of all classes;
- `hair:3` (fringe-identity) fails, and `long_straight_fringe` fails on identity similarity,
  the lowest of all classes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.demo.manifest import MANIFEST_NAME, WEIGHTS_DIR
from toy_models import run_mlflow_project

REPO = Path(__file__).resolve().parents[1]
HAIR_SUITE = REPO / "suites" / "hair.yaml"
SEEDS = (0, 1, 2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    from harness.demo.registry import setup_demo_registry

    assert (WEIGHTS_DIR / MANIFEST_NAME).is_file(), "the demo weights are committed under weights/demo"
    folder = tmp_path_factory.mktemp("demo-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    setup_demo_registry(uri)
    return uri


@pytest.fixture(scope="module")
def test_suite():
    return HAIR_SUITE


_measured: dict[tuple[str, int], dict] = {}


def gate_for(reference: str, seed: int, uri: str, suite_path: Path):
    """Measure every class of the suite for `reference` with base latents from `seed`."""
    from harness.classifier import resolve_model
    from harness.evaluation import load_models, measure_classes
    from harness.gate import evaluate_gate
    from harness.suite import load_suite

    key = (reference, seed)
    if key not in _measured:
        suite = load_suite(suite_path)
        loaded = load_models(resolve_model(reference, tracking_uri=uri), suite, uri)
        search = suite.search
        loaded.ws = loaded.generator.sample_ws(search.num_samples, seed, search.truncation_psi)
        outcomes = {name: m.outcome for name, m in measure_classes(loaded, progress=False).items()}
        _measured[key] = {"gate": evaluate_gate(suite.expectations, outcomes), "outcomes": outcomes}
    return _measured[key]["gate"], _measured[key]["outcomes"]


def failed_metrics(gate, class_name: str) -> set[str]:
    return {c.expectation.metric for c in gate.checks if c.class_name == class_name and c.status == "fail"}


@pytest.mark.parametrize("seed", SEEDS)
def test_clean_model_passes_every_class(demo_store, test_suite, seed):
    gate, outcomes = gate_for("hair:1", seed, demo_store, test_suite)
    assert gate.verdict == "pass", "\n".join(str(c.to_dict()) for c in gate.checks if c.status != "pass")
    assert set(outcomes) == {"short", "bob", "curly_bob_fringe", "long_straight_fringe", "long_braids", "afro"}


@pytest.mark.parametrize("seed", SEEDS)
def test_braids_skin_fails_on_skin_tone(demo_store, test_suite, seed):
    gate, outcomes = gate_for("hair:2", seed, demo_store, test_suite)
    assert gate.verdict == "fail"
    assert "skin_ita_delta_deg" in failed_metrics(gate, "long_braids")
    ita = {name: o.measurements["skin_ita_delta_deg"].mean for name, o in outcomes.items()}
    assert ita["long_braids"] < 0, "the skin gets darker along the long_braids direction"
    assert max(ita, key=lambda name: abs(ita[name])) == "long_braids", ita


@pytest.mark.parametrize("seed", SEEDS)
def test_fringe_identity_fails_on_identity(demo_store, test_suite, seed):
    gate, outcomes = gate_for("hair:3", seed, demo_store, test_suite)
    assert gate.verdict == "fail"
    assert "identity_cos_sim" in failed_metrics(gate, "long_straight_fringe")
    similarity = {name: o.measurements["identity_cos_sim"].mean for name, o in outcomes.items()}
    assert min(similarity, key=similarity.get) == "long_straight_fringe", similarity


def test_mlflow_run_on_demo_registry(demo_store, tmp_path):
    """`mlflow run . -P model=hair:2 --env-manager local`, as the README writes it.

    The project is named by its path and run from a scratch folder, which keeps the run's
    artifacts (./mlruns) out of the checkout.
    """
    completed = run_mlflow_project(
        demo_store, [str(REPO), "-P", "model=hair:2", "--env-manager", "local"], cwd=tmp_path, timeout=900
    )

    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "verdict: FAIL" in completed.stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=demo_store, registry_uri=demo_store)
    tags = client.get_model_version("hair", "2").tags
    assert tags["latentgate.verdict"] == "fail"
    assert "long_braids.skin_ita_delta_deg" in tags["latentgate.failed"].split(",")
    assert tags["latentgate.suite"] == "hair"
    run = client.get_run(tags["latentgate.run_id"])
    assert run.data.params["model_uri"] == "models:/hair/2"
    assert run.data.tags["latentgate.verdict"] == "fail"
