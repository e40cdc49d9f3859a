"""Loading suite files: validation messages with lines, defaults, paths and resolution."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from harness.demo.attributes import CLASS_NAMES
from harness.errors import ConfigError
from harness.metrics import METRICS
from harness.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
KNOWN_METRICS = ", ".join(sorted(METRICS))

VALID = """\
version: 1
generator: gen.pt
identity: id.onnx
regions:
  preset: ffhq1024
search:
  num_samples: 4
defaults:
  expect:
    - target_prob_gain >= 0.5
    - identity_cos_sim >= 0.6
    - abs(skin_ita_delta_deg) <= 8
classes:
  long_braids:
    expect: ["abs(skin_ita_delta_deg) <= 6"]
  afro: {}
"""


def write_suite(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    """Write a suite and the two weight files its paths name (never loaded by these tests)."""
    (folder / "gen.pt").write_bytes(b"placeholder, not loaded")
    (folder / "id.onnx").write_bytes(b"placeholder, not loaded")
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def error_message(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_suite(path)
    return str(raised.value)


def single_error(path: Path, line: int, key_path: str, message: str) -> str:
    return f"invalid suite file {path} (1 error):\n  {path}:{line}: {key_path}: {message}"


# --- Valid files ------------------------------------------------------------------------------

def test_valid_suite_resolves(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, VALID))
    assert suite.name == "suite"
    assert suite.version == 1
    assert suite.generator == tmp_path.resolve() / "gen.pt"
    assert suite.identity == tmp_path.resolve() / "id.onnx"
    assert suite.class_names == ("long_braids", "afro")
    assert suite.search.num_samples == 4
    assert suite.search.steps == 100  # default
    assert suite.search.layers is None
    assert suite.search.bootstrap.confidence == 0.95
    assert suite.regions.preset == "ffhq1024"
    assert suite.regions.face_crop == (0.10, 0.105, 0.90, 0.905)
    assert suite.classifier_classes is None
    assert suite.preprocessing is None


def test_class_expectation_replaces_default(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, VALID))
    braids = [(str(e), e.source) for e in suite.expectations["long_braids"]]
    afro = [(str(e), e.source) for e in suite.expectations["afro"]]
    assert braids == [
        ("target_prob_gain >= 0.5", "default"),
        ("identity_cos_sim >= 0.6", "default"),
        ("abs(skin_ita_delta_deg) <= 6", "class"),
    ]
    assert afro == [
        ("target_prob_gain >= 0.5", "default"),
        ("identity_cos_sim >= 0.6", "default"),
        ("abs(skin_ita_delta_deg) <= 8", "default"),
    ]


def test_signed_bound_keeps_abs_default(tmp_path: Path) -> None:
    # `skin_ita_delta_deg` and `abs(skin_ita_delta_deg)` are different keys, so both apply.
    text = VALID.replace(
        'expect: ["abs(skin_ita_delta_deg) <= 6"]',
        'expect: ["skin_ita_delta_deg >= -3", "skin_ita_delta_deg <= 5", "skin_L_delta > -9"]',
    )
    suite = load_suite(write_suite(tmp_path, text))
    assert [str(e) for e in suite.expectations["long_braids"]] == [
        "target_prob_gain >= 0.5",
        "identity_cos_sim >= 0.6",
        "abs(skin_ita_delta_deg) <= 8",
        "skin_ita_delta_deg >= -3",
        "skin_ita_delta_deg <= 5",
        "skin_L_delta > -9",
    ]


def test_statistic_default_and_override(tmp_path: Path) -> None:
    text = VALID.replace("defaults:\n", "defaults:\n  statistic: ci_low\n").replace(
        'expect: ["abs(skin_ita_delta_deg) <= 6"]',
        'expect: [{check: "abs(skin_ita_delta_deg) <= 6", statistic: interval}]',
    )
    suite = load_suite(write_suite(tmp_path, text))
    statistics = [e.statistic for e in suite.expectations["long_braids"]]
    assert statistics == ["ci_low", "ci_low", "interval"]


def test_null_class_means_defaults_only(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, VALID.replace("afro: {}", "afro:")))
    assert len(suite.expectations["afro"]) == 3


def test_yaml_12_scalars(tmp_path: Path) -> None:
    text = VALID.replace(
        "  num_samples: 4\n", "  num_samples: 4\n  learning_rate: 5e-3\n  seed: 0123\n"
    ).replace("version: 1\n", "version: 1\nname: yes\ndescription: 2024-01-01\n")
    suite = load_suite(write_suite(tmp_path, text))
    assert suite.search.learning_rate == 0.005
    assert suite.search.seed == 123
    assert suite.name == "yes"
    assert suite.description == "2024-01-01"


def test_layers_parsed_and_checked(tmp_path: Path) -> None:
    text = VALID.replace("  num_samples: 4\n", '  num_samples: 4\n  layers: [9, "2-4", 0, 3]\n')
    path = write_suite(tmp_path, text)
    suite = load_suite(path)
    assert suite.search.layers == (0, 2, 3, 4, 9)
    assert suite.layer_indices(num_ws=10) == [0, 2, 3, 4, 9]
    with pytest.raises(ConfigError) as raised:
        suite.layer_indices(num_ws=8)
    assert str(raised.value) == (
        f"{path}:8: search.layers: W+ index 9 is out of range because the generator has "
        "num_ws = 8 (indices 0-7); use indices below 8 or `all`"
    )


def test_all_layers_follow_num_ws(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, VALID))
    assert suite.layer_indices(num_ws=6) == [0, 1, 2, 3, 4, 5]


def test_alphas_span_both_ends(tmp_path: Path) -> None:
    text = VALID.replace(
        "  num_samples: 4\n", "  num_samples: 4\n  alpha_max: 3\n  num_frames: 4\n"
    )
    suite = load_suite(write_suite(tmp_path, text))
    assert suite.search.alphas == (0.0, 1.0, 2.0, 3.0)


def test_relative_paths_use_suite_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "g.pt").write_bytes(b"x")
    (weights / "face").mkdir()
    (weights / "face" / "w600k_r50.onnx").write_bytes(b"x")
    text = VALID.replace("generator: gen.pt", "generator: ../weights/g.pt").replace(
        "identity: id.onnx", "identity: ../weights/face"
    )
    path = suites / "s.yaml"
    path.write_text(text)
    monkeypatch.chdir(weights)  # the working folder must not matter
    suite = load_suite(path)
    assert suite.generator == weights.resolve() / "g.pt"
    assert suite.identity == weights.resolve() / "face"


def test_to_dict_is_json_with_checksum(tmp_path: Path) -> None:
    path = write_suite(tmp_path, VALID)
    suite = load_suite(path)
    data = json.loads(json.dumps(suite.to_dict()))
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert suite.sha256 == data["sha256"]
    assert data["search"]["layers"] == "all"
    assert data["search"]["steps"] == 100
    assert data["regions"]["skin"] == [0.32, 0.54, 0.68, 0.66]
    assert data["classes"]["long_braids"]["expect"][2]["check"] == "abs(skin_ita_delta_deg) <= 6"
    assert data["generator"] == str(tmp_path.resolve() / "gen.pt")


def test_explicit_boxes_without_preset(tmp_path: Path) -> None:
    text = VALID.replace(
        "  preset: ffhq1024\n", "  face_crop: [0, 0, 1, 1]\n  skin: [0.4, 0.5, 0.6, 0.7]\n"
    )
    suite = load_suite(write_suite(tmp_path, text))
    assert suite.regions.preset is None
    assert suite.regions.face_crop == (0.0, 0.0, 1.0, 1.0)
    assert suite.regions.skin == (0.4, 0.5, 0.6, 0.7)


def test_box_overrides_preset(tmp_path: Path) -> None:
    text = VALID.replace(
        "  preset: ffhq1024\n", "  preset: ffhq1024\n  skin: [0.4, 0.5, 0.6, 0.7]\n"
    )
    suite = load_suite(write_suite(tmp_path, text))
    assert suite.regions.face_crop == (0.10, 0.105, 0.90, 0.905)
    assert suite.regions.skin == (0.4, 0.5, 0.6, 0.7)


def test_demo_preset_uses_renderer_skin_box(tmp_path: Path) -> None:
    from harness.demo.render import DEMO_SKIN_BOX

    suite = load_suite(write_suite(tmp_path, VALID.replace("preset: ffhq1024", "preset: demo")))
    assert suite.regions.preset == "demo"
    assert suite.regions.skin == tuple(DEMO_SKIN_BOX)
    assert suite.regions.face_crop == (0.19, 0.15, 0.81, 0.77)


def test_example_suite_is_valid() -> None:
    suite = load_suite(REPO / "suites" / "example.yaml", check_paths=False)
    assert len(suite.class_names) == 6
    assert suite.preprocessing is not None
    assert suite.preprocessing.resolution == 64
    assert suite.classifier_classes == suite.class_names
    assert suite.class_names == CLASS_NAMES
    braids = [str(e) for e in suite.expectations["long_braids"]]
    assert "abs(skin_ita_delta_deg) <= 6" in braids
    assert "abs(skin_ita_delta_deg) <= 8" not in braids


# --- check_classes ----------------------------------------------------------------------------

def test_check_classes_accepts_known(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, VALID))
    suite.check_classes(["short", "long_braids", "afro"])


def test_check_classes_names_unknown(tmp_path: Path) -> None:
    path = write_suite(tmp_path, VALID)
    suite = load_suite(path)
    with pytest.raises(ConfigError) as raised:
        suite.check_classes(["short", "bob", "afro"])
    assert str(raised.value) == (
        f"{path}: the suite names classes that the classifier does not have: 'long_braids' "
        "(line 14). The classifier's classes are: short, bob, afro. Rename or remove them "
        "under `classes:`, or evaluate a model that has these classes."
    )


# --- Errors, each with its exact message ------------------------------------------------------

@pytest.mark.parametrize(
    ("old", "new", "line", "key_path", "message"),
    [
        pytest.param(
            "version: 1\n",
            "version: 1\ncolour: red\n",
            2,
            "colour",
            "unknown key 'colour'; allowed keys here: version, name, description, generator, "
            "identity, classifier, regions, search, defaults, classes",
            id="unknown-key-top-level",
        ),
        pytest.param(
            "  num_samples: 4\n",
            "  num_samples: 4\n  stepz: 10\n",
            8,
            "search.stepz",
            "unknown key 'stepz'; allowed keys here: num_samples, seed, truncation_psi, steps, "
            "learning_rate, lambda_id, lambda_l2, layers, alpha_max, num_frames, bootstrap",
            id="unknown-key-nested",
        ),
        pytest.param(
            "  afro: {}\n",
            "  afro: {expect: [], weight: 2}\n",
            16,
            "classes.afro.weight",
            "unknown key 'weight'; allowed keys here: expect",
            id="unknown-key-in-class",
        ),
        pytest.param(
            "  num_samples: 4\n",
            '  num_samples: "4"\n',
            7,
            "search.num_samples",
            "expected an integer, got the string '4'; remove the quotes",
            id="wrong-type-quoted-number",
        ),
        pytest.param(
            "  num_samples: 4\n",
            "  num_samples: 4.0\n",
            7,
            "search.num_samples",
            "expected an integer, got the number 4.0; write a whole number without a decimal "
            "point",
            id="wrong-type-float-for-int",
        ),
        pytest.param(
            "  num_samples: 4\n",
            "  num_samples: 4\n  truncation_psi: true\n",
            8,
            "search.truncation_psi",
            "expected a number, got the boolean true",
            id="wrong-type-bool-for-float",
        ),
        pytest.param(
            "  preset: ffhq1024\n",
            "  preset: ffhq\n",
            5,
            "regions.preset",
            "expected 'demo' or 'ffhq1024', got the string 'ffhq'",
            id="unknown-preset",
        ),
        pytest.param(
            '    expect: ["abs(skin_ita_delta_deg) <= 6"]\n',
            '    expect: ["abs(skin_ita_delta) <= 6"]\n',
            15,
            "classes.long_braids.expect[0]",
            f"unknown metric 'skin_ita_delta'; known metrics: {KNOWN_METRICS} "
            "(in 'abs(skin_ita_delta) <= 6')",
            id="unknown-metric",
        ),
        pytest.param(
            "    - identity_cos_sim >= 0.6\n",
            "    - identity_cos_sim == 0.6\n",
            11,
            "defaults.expect[1]",
            "unsupported operator '==' in 'identity_cos_sim == 0.6'; use one of >=, <=, >, <",
            id="bad-operator",
        ),
        pytest.param(
            "    - identity_cos_sim >= 0.6\n",
            "    - {check: identity_cos_sim >= 0.6, statistic: median}\n",
            11,
            "defaults.expect[1].statistic",
            "expected 'mean', 'ci_low', 'ci_high' or 'interval', got the string 'median'",
            id="unknown-statistic",
        ),
        pytest.param(
            "  preset: ffhq1024\n",
            "  preset: ffhq1024\n  skin: [0.2, 0.5, 1.2, 0.7]\n",
            6,
            "regions.skin",
            "x1 = 1.2 is outside [0, 1]; boxes are in normalised image coordinates, so divide "
            "pixel coordinates by the image size",
            id="box-outside-unit-square",
        ),
        pytest.param(
            "  preset: ffhq1024\n",
            "  preset: ffhq1024\n  face_crop: [0.6, 0.1, 0.4, 0.9]\n",
            6,
            "regions.face_crop",
            "the box [0.6, 0.1, 0.4, 0.9] is empty; it needs x0 < x1 and y0 < y1",
            id="box-empty",
        ),
        pytest.param(
            "  preset: ffhq1024\n",
            "  preset: ffhq1024\n  skin: [0.2, 0.5, 0.7]\n",
            6,
            "regions.skin",
            "a box is [x0, y0, x1, y1], 4 numbers; got 3",
            id="box-three-numbers",
        ),
        pytest.param(
            "  preset: ffhq1024\n",
            "  skin: [0.2, 0.5, 0.7, 0.8]\n",
            4,
            "regions",
            "without a preset both face_crop and skin are required; set preset to one of "
            "demo, ffhq1024 or give both boxes",
            id="no-preset-one-box",
        ),
        pytest.param(
            'classes:\n  long_braids:\n    expect: ["abs(skin_ita_delta_deg) <= 6"]\n'
            "  afro: {}\n",
            "classes: {}\n",
            13,
            "classes",
            "the class list is empty; name at least one class to gate",
            id="empty-class-list",
        ),
        pytest.param(
            "regions:\n  preset: ffhq1024\n",
            "regions: ffhq1024\n",
            4,
            "regions",
            "expected a mapping of keys to values, got the string 'ffhq1024'; write "
            "`regions: {preset: ffhq1024}`",
            id="regions-as-string",
        ),
        pytest.param(
            '    expect: ["abs(skin_ita_delta_deg) <= 6"]\n',
            "    expect: abs(skin_ita_delta_deg) <= 6\n",
            15,
            "classes.long_braids.expect",
            "expected a list, got the string 'abs(skin_ita_delta_deg) <= 6'; write a list, e.g. "
            "`expect: ['abs(skin_ita_delta_deg) <= 6']`",
            id="expect-as-string",
        ),
        pytest.param(
            "    - target_prob_gain >= 0.5\n",
            "    - 0.5\n",
            10,
            "defaults.expect[0]",
            "an expectation is a string such as `identity_cos_sim >= 0.6`, or a mapping with "
            "`check` and `statistic`; got 0.5",
            id="expectation-number",
        ),
        pytest.param(
            "version: 1\n",
            "version: 2\n",
            1,
            "version",
            "unsupported suite version 2; this LatentGate reads `version: 1`",
            id="unsupported-version",
        ),
        pytest.param(
            "generator: gen.pt\n",
            "",
            1,
            "generator",
            "missing required key 'generator'",
            id="missing-generator-key",
        ),
        pytest.param(
            "  afro: {}\n",
            "  afro: {}\n  long_braids: {}\n",
            17,
            "classes.long_braids",
            "duplicate key 'long_braids', already set on line 14; keep only one of them",
            id="duplicate-key",
        ),
        pytest.param(
            '    expect: ["abs(skin_ita_delta_deg) <= 6"]\n',
            '    expect: ["abs(skin_ita_delta_deg) <= 6", "abs(skin_ita_delta_deg) < 7"]\n',
            15,
            "classes.long_braids.expect[1]",
            "'abs(skin_ita_delta_deg) < 7' bounds the same side of abs(skin_ita_delta_deg) as "
            "'abs(skin_ita_delta_deg) <= 6'; keep one of them",
            id="same-side-twice",
        ),
        pytest.param(
            "  num_samples: 4\n",
            "  num_samples: 4\n  layers: [0, -1]\n",
            8,
            "search.layers",
            'invalid layer entry -1; use all, or a list of W+ indices and "a-b" ranges such as '
            '[0, 1, "4-7"]',
            id="negative-layer",
        ),
        pytest.param(
            "  num_samples: 4\n",
            "  num_samples: 1\n",
            7,
            "search.num_samples",
            "must be >= 2, got 1",
            id="one-sample",
        ),
        pytest.param(
            "version: 1\n",
            "version: 1\nclassifier:\n  preprocessing: {resolution: 64, mean: [0.5, 0.5], "
            "std: [0.5, 0.5, 0.5]}\n",
            3,
            "classifier.preprocessing.mean",
            "needs 3 numbers, one per RGB channel; got 2",
            id="mean-two-channels",
        ),
        pytest.param(
            "version: 1\n",
            "version: 1\nclassifier:\n  classes: [afro, short]\n",
            16,
            "classes.long_braids",
            "class 'long_braids' is not in classifier.classes (afro, short); fix the name or "
            "add it to that list",
            id="class-not-in-classifier-list",
        ),
    ],
)
def test_error_message(
    tmp_path: Path, old: str, new: str, line: int, key_path: str, message: str
) -> None:
    assert old in VALID
    path = write_suite(tmp_path, VALID.replace(old, new, 1))
    assert error_message(path) == single_error(path, line, key_path, message)


def test_class_without_expectations(tmp_path: Path) -> None:
    text = VALID.replace(
        "defaults:\n  expect:\n    - target_prob_gain >= 0.5\n    - identity_cos_sim >= 0.6\n"
        "    - abs(skin_ita_delta_deg) <= 8\n",
        "",
    )
    path = write_suite(tmp_path, text)
    assert error_message(path) == single_error(
        path,
        11,
        "classes.afro",
        "class 'afro' has no expectations; add `expect:` under it or `defaults.expect`",
    )


def test_errors_collected_in_line_order(tmp_path: Path) -> None:
    text = (
        VALID.replace("  num_samples: 4\n", '  num_samples: "4"\n  stepz: 1\n')
        .replace("version: 1\n", "version: 1\ncolour: red\n")
        .replace("    - identity_cos_sim >= 0.6\n", "    - identity_cos_sim = 0.6\n")
    )
    path = write_suite(tmp_path, text)
    lines = error_message(path).splitlines()
    assert lines[0] == f"invalid suite file {path} (4 errors):"
    assert [line.split(": ")[0:2] for line in lines[1:]] == [
        [f"  {path}:2", "colour"],
        [f"  {path}:8", "search.num_samples"],
        [f"  {path}:9", "search.stepz"],
        [f"  {path}:13", "defaults.expect[1]"],
    ]


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    text = VALID.replace("  preset: ffhq1024\n", "  preset: ffhq1024\n   skin: x\n")
    path = write_suite(tmp_path, text)
    assert error_message(path) == (
        f"{path}:6:8: malformed YAML: mapping values are not allowed here. Fix the syntax "
        "there: indentation, a missing ':' after a key, or an unclosed quote or bracket."
    )


def test_malformed_yaml_unclosed_bracket(tmp_path: Path) -> None:
    text = VALID.replace('"abs(skin_ita_delta_deg) <= 6"]', '"abs(skin_ita_delta_deg) <= 6"')
    path = write_suite(tmp_path, text)
    assert error_message(path) == (
        f"{path}:16:3: malformed YAML: while parsing a flow sequence (line 15): expected ',' or "
        "']', but got '<scalar>'. Fix the syntax there: indentation, a missing ':' after a key, "
        "or an unclosed quote or bracket."
    )


def test_malformed_yaml_tab(tmp_path: Path) -> None:
    path = write_suite(tmp_path, VALID.replace("  num_samples: 4\n", "\tnum_samples: 4\n"))
    assert error_message(path) == (
        f"{path}:7:1: malformed YAML: while scanning for the next token: found character '\\t' "
        "that cannot start any token. Indent with spaces; YAML does not allow tabs there."
    )


def test_missing_generator_file(tmp_path: Path) -> None:
    path = write_suite(tmp_path, VALID.replace("generator: gen.pt", "generator: ../nope/g.pt"))
    missing = tmp_path.parent.resolve() / "nope" / "g.pt"
    assert error_message(path) == single_error(
        path,
        2,
        "generator",
        f"generator file not found: {missing} (resolved from '../nope/g.pt' against the suite "
        "file's folder); fix the path or put the file there",
    )


def test_missing_paths_skipped_on_request(tmp_path: Path) -> None:
    path = write_suite(tmp_path, VALID.replace("generator: gen.pt", "generator: nope.pt"))
    suite = load_suite(path, check_paths=False)
    assert suite.generator == tmp_path.resolve() / "nope.pt"


def test_identity_must_be_onnx(tmp_path: Path) -> None:
    path = write_suite(tmp_path, VALID.replace("identity: id.onnx", "identity: gen.pt"))
    assert error_message(path) == single_error(
        path,
        3,
        "identity",
        f"{tmp_path.resolve() / 'gen.pt'} is not an .onnx file; give an ArcFace .onnx file or "
        "an InsightFace model folder",
    )


def test_identity_folder_without_onnx(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    path = write_suite(tmp_path, VALID.replace("identity: id.onnx", "identity: models"))
    assert error_message(path) == single_error(
        path,
        3,
        "identity",
        f"the folder {tmp_path.resolve() / 'models'} contains no .onnx file; an InsightFace "
        "model folder holds its models as .onnx files",
    )


def test_path_error_reported_with_schema_errors(tmp_path: Path) -> None:
    text = VALID.replace("generator: gen.pt", "generator: nope.pt").replace(
        "  num_samples: 4\n", "  num_samples: four\n"
    )
    lines = error_message(write_suite(tmp_path, text)).splitlines()
    assert len(lines) == 3
    assert "generator: generator file not found" in lines[1]
    assert "search.num_samples: expected an integer, got the string 'four'" in lines[2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b"", "{path}: the suite file is empty; start from suites/example.yaml", id="empty"
        ),
        pytest.param(
            b"- a\n- b\n",
            "{path}:1: the top level must be a mapping of keys (version, generator, identity, "
            "regions, classes, ...)",
            id="top-level-list",
        ),
        pytest.param(
            b"version: 1\nname: caf\xe9\n",
            "{path}: not UTF-8 text (invalid byte at offset 20); save the suite as UTF-8",
            id="not-utf8",
        ),
    ],
)
def test_unusable_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_bytes(content)
    assert error_message(path) == message.format(path=path)


def test_suite_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert error_message(path) == f"suite file not found: {path}"


def test_config_error_exit_code(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_suite(tmp_path / "missing.yaml")
    assert raised.value.exit_code == 2
