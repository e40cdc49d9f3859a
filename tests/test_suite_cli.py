"""`latentgate suite check FILE`, run as a real command."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SUITE = """\
version: 1
name: hair-mini
generator: gen.pt
identity: id.onnx
regions:
  preset: ffhq1024
search:
  num_samples: 4
  steps: 20
  layers: [0, "2-3"]
defaults:
  expect:
    - target_prob_gain >= 0.5
    - identity_cos_sim >= 0.6
classes:
  long_braids:
    expect: ["abs(skin_ita_delta_deg) <= 6"]
  afro: {}
"""


def write_suite(folder: Path, text: str) -> Path:
    (folder / "gen.pt").write_bytes(b"placeholder, not loaded")
    (folder / "id.onnx").write_bytes(b"placeholder, not loaded")
    path = folder / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def suite_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "suite", "check", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_valid_suite_exits_0(tmp_path: Path) -> None:
    path = write_suite(tmp_path, SUITE)
    result = suite_check(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""

    lines = result.stdout.splitlines()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert lines[0] == f"suite 'hair-mini': {path} is valid (sha256 {sha[:12]})"
    assert lines[1] == f"  generator: {tmp_path.resolve() / 'gen.pt'}"
    assert lines[2] == f"  identity:  {tmp_path.resolve() / 'id.onnx'}"
    assert lines[3] == (
        "  regions:   preset ffhq1024, face_crop [0.1, 0.105, 0.9, 0.905], "
        "skin [0.32, 0.54, 0.68, 0.66]"
    )
    assert lines[4] == (
        "  search:    4 samples (seed 0), truncation_psi 0.7, 20 steps at learning_rate 0.05, "
        "lambda_id 1, lambda_l2 0.01, layers 0, 2, 3"
    )
    assert lines[5] == (
        "  walk:      alpha 0 to 2 in 9 frames; bootstrap 1000 resamples, 95% interval (seed 0)"
    )
    assert lines[6:] == [
        "classes (2):",
        "  long_braids",
        "    target_prob_gain >= 0.5            statistic mean     from default",
        "    identity_cos_sim >= 0.6            statistic mean     from default",
        "    abs(skin_ita_delta_deg) <= 6       statistic mean     from class",
        "  afro",
        "    target_prob_gain >= 0.5            statistic mean     from default",
        "    identity_cos_sim >= 0.6            statistic mean     from default",
    ]


def test_invalid_suite_exits_2_with_all_errors(tmp_path: Path) -> None:
    text = SUITE.replace("  steps: 20\n", "  steps: twenty\n").replace(
        "generator: gen.pt", "generator: missing.pt"
    )
    path = write_suite(tmp_path, text)
    result = suite_check(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"latentgate: error: invalid suite file {path} (2 errors):",
        f"  {path}:3: generator: generator file not found: {tmp_path.resolve() / 'missing.pt'} "
        "(resolved from 'missing.pt' against the suite file's folder); fix the path or put the "
        "file there",
        f"  {path}:9: search.steps: expected an integer, got the string 'twenty'",
    ]


def test_malformed_yaml_exits_2(tmp_path: Path) -> None:
    path = write_suite(tmp_path, SUITE.replace("  afro: {}\n", "  afro: {\n"))
    result = suite_check(path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"latentgate: error: {path}:")
    assert "malformed YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_suite_file_exits_2(tmp_path: Path) -> None:
    result = suite_check(tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert result.stderr == f"latentgate: error: suite file not found: {tmp_path / 'nope.yaml'}\n"
