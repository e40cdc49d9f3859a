"""The committed demo weights match their manifest, and the manifest code detects tampering."""

from __future__ import annotations

import json

import pytest

from harness.demo.manifest import (
    MANIFEST_NAME,
    WEIGHTS_DIR,
    read_manifest,
    record_file,
    sha256_of,
    verified_path,
)
from harness.errors import CheckpointError


def test_committed_files_match_manifest():
    if not (WEIGHTS_DIR / MANIFEST_NAME).is_file():
        pytest.skip("no demo weights committed yet")
    files = read_manifest()["files"]
    on_disk = {p.name for p in WEIGHTS_DIR.iterdir() if p.name != MANIFEST_NAME}
    assert on_disk == set(files), "every file in weights/demo must be listed, and only those"
    for name, entry in files.items():
        path = WEIGHTS_DIR / name
        assert path.stat().st_size == entry["size"], name
        assert sha256_of(path) == entry["sha256"], name
        assert entry["command"].startswith("latentgate demo train "), name
        assert isinstance(entry["seed"], int), name


def test_committed_weights_under_size_budget():
    if not WEIGHTS_DIR.is_dir():
        pytest.skip("no demo weights committed yet")
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir())
    assert total < 30 * 1024 * 1024


def test_record_and_verify(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"weights v1")
    record_file("model.bin", "latentgate demo train classifiers --seed 3", 3, {"accuracy": 0.9}, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["files"]["model.bin"]["size"] == len(b"weights v1")
    assert manifest["files"]["model.bin"]["seed"] == 3
    assert verified_path("model.bin", tmp_path) == weights


def test_record_adds_provenance(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"weights v2")
    started_from = {"path": "old/model.bin", "sha256": "ab" * 32}
    record_file("model.bin", "latentgate demo train generator --seed 0", 0, None, tmp_path, {"started_from": started_from})
    entry = read_manifest(tmp_path)["files"]["model.bin"]
    assert entry["started_from"] == started_from
    assert entry["sha256"] == sha256_of(tmp_path / "model.bin")


def test_tampered_file_rejected(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"weights v1")
    record_file("model.bin", "latentgate demo train classifiers --seed 0", 0, None, tmp_path)
    (tmp_path / "model.bin").write_bytes(b"weights v2")
    with pytest.raises(CheckpointError, match="has sha256 .* but the manifest records"):
        verified_path("model.bin", tmp_path)


def test_unlisted_and_missing_files_rejected(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    record_file("model.bin", "latentgate demo train classifiers --seed 0", 0, None, tmp_path)
    with pytest.raises(CheckpointError, match="not listed in"):
        verified_path("other.bin", tmp_path)
    (tmp_path / "model.bin").unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        verified_path("model.bin", tmp_path)


def test_missing_manifest_names_fix(tmp_path):
    with pytest.raises(CheckpointError, match="latentgate demo train all"):
        read_manifest(tmp_path)
