"""The manifest of the demo world's committed weights: checksum, size and provenance per file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights" / "demo"
MANIFEST_NAME = "MANIFEST.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict:
    """Return the parsed manifest; raise CheckpointError if it is missing or malformed."""
    path = weights_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"demo weights manifest not found at {path}; rebuild the demo world with "
            "`latentgate demo train all` or restore weights/demo from the repository."
        ) from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"demo weights manifest {path} is not valid JSON: {error}") from None
    if not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"demo weights manifest {path} has no 'files' mapping")
    return manifest


def record_file(
    name: str,
    command: str,
    seed: int,
    figures: dict | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    provenance: dict | None = None,
) -> None:
    """Add or replace the manifest entry of `weights_dir / name` with its checksum and provenance.

    `provenance` adds keys to the entry, such as the checksum of a checkpoint training started from.
    """
    path = weights_dir / name
    manifest_path = weights_dir / MANIFEST_NAME
    manifest = read_manifest(weights_dir) if manifest_path.exists() else {"files": {}}
    manifest["files"][name] = {
        "sha256": sha256_of(path),
        "size": path.stat().st_size,
        "command": command,
        "seed": seed,
        "figures": figures or {},
        **(provenance or {}),
    }
    manifest["files"] = dict(sorted(manifest["files"].items()))
    temporary = manifest_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    temporary.replace(manifest_path)


def verified_path(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Return the path of a committed demo file after checking it against the manifest."""
    entry = read_manifest(weights_dir)["files"].get(name)
    path = weights_dir / name
    if entry is None:
        raise CheckpointError(f"{path} is not listed in {weights_dir / MANIFEST_NAME}")
    if not path.is_file():
        raise CheckpointError(f"demo weights file {path} is missing; restore weights/demo")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise CheckpointError(
            f"demo weights file {path} has sha256 {actual}, but the manifest records "
            f"{entry['sha256']}; restore the file or retrain it with: {entry['command']}"
        )
    return path
