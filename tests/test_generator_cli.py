"""`latentgate generate` and `latentgate convert`, run as real commands."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from harness.generator import load_generator
from harness.generator.render import to_uint8

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
ROSINALITY = FIXTURES / "rosinality_s32_convert.pt"
NVIDIA_STATE = FIXTURES / "nvidia_ada_r32_state.pt"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_clean_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("latentgate: error: ")]
    assert len(error_lines) == 1, result.stderr
    assert fragment in error_lines[0]


class _ShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_generate_writes_seed_images_and_grid(tmp_path):
    out = tmp_path / "renders"
    result = run_cli("generate", "--generator", ROSINALITY, "--seeds", "0-3,9", "--truncation-psi", "0.7", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "wrote 5 images" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "grid.png",
        "seed0000.png",
        "seed0001.png",
        "seed0002.png",
        "seed0003.png",
        "seed0009.png",
    ]
    generator = load_generator(ROSINALITY)
    for seed in (0, 9):
        with torch.no_grad():
            expected = to_uint8(generator.synthesis(generator.sample_ws(1, seed, truncation_psi=0.7)))[0]
        written = iio.imread(out / f"seed{seed:04d}.png").astype(int)
        # The command renders seeds in batches, and convolution results differ in the last float
        # bits between batch sizes, which can move a pixel by one level after rounding.
        assert np.abs(written - expected).max() <= 1
    grid = iio.imread(out / "grid.png")
    assert grid.shape == (64, 96, 3)  # 5 tiles of 32 px in 3 columns and 2 rows
    assert np.array_equal(grid[32:, :32], iio.imread(out / "seed0003.png"))
    assert not grid[32:, 64:].any()  # the sixth cell stays empty


def test_convert_then_generate_gives_same_images(tmp_path):
    converted = tmp_path / "nvidia.safetensors"
    result = run_cli("convert", NVIDIA_STATE, converted)
    assert result.returncode == 0, result.stderr
    assert "converted" in result.stderr
    from_original = run_cli("generate", "--generator", NVIDIA_STATE, "--seeds", "4", "--out", tmp_path / "a")
    from_converted = run_cli("generate", "--generator", converted, "--seeds", "4", "--out", tmp_path / "b")
    assert from_original.returncode == 0, from_original.stderr
    assert from_converted.returncode == 0, from_converted.stderr
    first = iio.imread(tmp_path / "a" / "seed0004.png")
    second = iio.imread(tmp_path / "b" / "seed0004.png")
    assert first.shape == (32, 32, 3)
    assert np.array_equal(first, second)


def test_convert_existing_destination_needs_force(tmp_path):
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"keep me")
    result = run_cli("convert", ROSINALITY, target)
    assert_clean_error(result, "already exists; pass --force to overwrite it")
    assert target.read_bytes() == b"keep me"


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.pt"
    data = ROSINALITY.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "readme.pt"
    path.write_text("not a checkpoint\n")
    return path


def _unknown_key(tmp_path: Path) -> Path:
    checkpoint = torch.load(ROSINALITY, weights_only=True)
    checkpoint["g_ema"]["style.1.scale"] = torch.ones(1)
    path = tmp_path / "unknown_key.pt"
    torch.save(checkpoint, path)
    return path


def _shape_mismatch(tmp_path: Path) -> Path:
    checkpoint = torch.load(ROSINALITY, weights_only=True)
    checkpoint["g_ema"]["conv1.activate.bias"] = torch.zeros(32)
    path = tmp_path / "shape_mismatch.pt"
    torch.save(checkpoint, path)
    return path


def _shell_payload(tmp_path: Path) -> Path:
    path = tmp_path / "evil.pkl"
    with path.open("wb") as file:
        pickle.dump({"G_ema": _ShellCommand(f"touch {tmp_path / 'payload_ran'}")}, file)
    return path


BAD_GENERATORS = {
    "missing": (lambda tmp_path: tmp_path / "absent.pkl", "no such file"),
    "directory": (lambda tmp_path: tmp_path, "is a directory"),
    "empty": (_empty, "the file is empty"),
    "text": (_text, "not a generator checkpoint"),
    "truncated": (_truncated, "truncated or corrupt"),
    "unknown_key": (_unknown_key, "unexpected keys: style.1.scale"),
    "shape_mismatch": (_shape_mismatch, "conv1.activate.bias has shape [32] but [64] is expected"),
    "shell_payload": (_shell_payload, "refusing to load: the pickle asks for"),
}


@pytest.mark.parametrize("case", sorted(BAD_GENERATORS))
def test_generate_bad_generator_exits_2(tmp_path, case):
    make_path, fragment = BAD_GENERATORS[case]
    result = run_cli("generate", "--generator", make_path(tmp_path), "--seeds", "0", "--out", tmp_path / "out")
    assert_clean_error(result, fragment)
    assert not (tmp_path / "payload_ran").exists()
    assert not (tmp_path / "out").exists()


def test_generate_bad_seeds_exits_2(tmp_path):
    result = run_cli("generate", "--generator", ROSINALITY, "--seeds", "9-2", "--out", tmp_path / "out")
    assert_clean_error(result, "seed range '9-2' is reversed")


def test_generate_torch_file_named_safetensors(tmp_path):
    misnamed = tmp_path / "weights.safetensors"
    misnamed.write_bytes(ROSINALITY.read_bytes())
    result = run_cli("generate", "--generator", misnamed, "--seeds", "0", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "seed0000.png").is_file()
    converted = tmp_path / "converted.safetensors"
    result = run_cli("convert", misnamed, converted)
    assert result.returncode == 0, result.stderr
    assert converted.is_file()


def test_generate_out_below_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")
    out = tmp_path / "afile" / "sub"
    result = run_cli("generate", "--generator", ROSINALITY, "--seeds", "0", "--out", out)
    assert_clean_error(result, f"{out}: cannot create the output folder")


@pytest.mark.parametrize("name", ["seed0000.png", "grid.png"])
def test_generate_output_name_taken_by_folder(tmp_path, name):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    result = run_cli("generate", "--generator", ROSINALITY, "--seeds", "0", "--out", out)
    assert_clean_error(result, f"{out / name}: cannot write the image")


def test_generate_rejects_empty_out(tmp_path):
    result = run_cli("generate", "--generator", ROSINALITY, "--seeds", "0", "--out", "")
    assert_clean_error(result, "--out is empty")


@pytest.mark.parametrize("psi", ["nan", "inf", "-inf"])
def test_generate_rejects_non_finite_truncation_psi(tmp_path, psi):
    out = tmp_path / "out"
    result = run_cli("generate", "--generator", ROSINALITY, "--seeds", "0", f"--truncation-psi={psi}", "--out", out)
    assert_clean_error(result, "--truncation-psi must be a finite number")
    assert not out.exists()


def test_generate_rejects_huge_seed_before_loading(tmp_path):
    missing = tmp_path / "missing.pt"
    result = run_cli("generate", "--generator", missing, "--seeds", "99999999999999999999", "--out", tmp_path / "out")
    assert_clean_error(result, "--seeds: seed 99999999999999999999")
    assert "[0, 2**63)" in result.stderr


def test_generate_warns_about_earlier_seed_images(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "seed0042.png"
    earlier.write_bytes(b"from another run")
    result = run_cli("generate", "--generator", ROSINALITY, "--seeds", "0", "--out", out)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr
    assert f"{out} already contains 1 seed images" in warnings[0]
    assert earlier.read_bytes() == b"from another run"


def test_generate_no_warning_in_new_folder(tmp_path):
    result = run_cli("generate", "--generator", ROSINALITY, "--seeds", "0", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
