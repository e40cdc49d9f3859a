"""A folder that keeps measured classes across pytest sessions (`--latentgate-cache DIR`).

Each entry is one class of one model version under one suite: `<digest>.json` with the
measurements, and `<digest>.gif` with the walk. The digest is the SHA-256 of the entry's key,
which contains everything the result depends on: the registered model's name, version and run ID,
the checksums of the suite file, the generator and the identity model, the class, the torch
device and the LatentGate version. A change to any of them gives a new key, so stale entries are
never read, only left behind; deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import __version__

if TYPE_CHECKING:
    from harness.metrics.bootstrap import Measurement
    from harness.pytest_plugin.session import ProbeResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedClass:
    """A cache entry as read back: the measurements and the GIF, if its file still exists."""

    measurements: dict[str, Measurement]
    gif: Path | None


class DiskCache:
    """Cache entries in `folder`, created on the first write."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self, key: Mapping[str, object]) -> CachedClass | None:
        """Return the entry stored under `key`, or None when there is none or it is unreadable."""
        from harness.metrics.bootstrap import Measurement

        full_key = _full_key(key)
        path = self._path(full_key, ".json")
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["key"] != full_key:
                raise ValueError("the stored key differs from the requested one")
            measurements = {
                metric: Measurement.from_dict(_from_json(values))
                for metric, values in entry["measurements"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            # Read again from scratch; the next store overwrites the entry.
            log.warning("ignoring the unreadable cache entry %s: %s", path, error)
            return None
        gif = self._path(full_key, ".gif")
        return CachedClass(measurements=measurements, gif=gif if gif.is_file() else None)

    def store(self, key: Mapping[str, object], result: ProbeResult) -> None:
        """Write `result`'s measurements and a copy of its GIF under `key`."""
        full_key = _full_key(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        if result.gif is not None:
            _replace_atomically(self._path(full_key, ".gif"), lambda tmp: shutil.copyfile(result.gif, tmp))
        entry = {
            "key": full_key,
            "measurements": {
                metric: measurement_to_json(measurement)
                for metric, measurement in result.measurements.items()
            },
        }
        text = json.dumps(entry, indent=2, sort_keys=True, allow_nan=False)
        _replace_atomically(
            self._path(full_key, ".json"), lambda tmp: tmp.write_text(text, encoding="utf-8")
        )

    def _path(self, full_key: Mapping[str, object], suffix: str) -> Path:
        canonical = json.dumps(full_key, sort_keys=True, separators=(",", ":"))
        return self.folder / (hashlib.sha256(canonical.encode("utf-8")).hexdigest() + suffix)


def _full_key(key: Mapping[str, object]) -> dict[str, object]:
    return {**key, "latentgate_version": __version__}


def _replace_atomically(path: Path, write) -> None:
    # Several pytest processes (pytest-xdist workers, parallel CI jobs) may share the folder,
    # so an entry appears whole or not at all.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def measurement_to_json(measurement: Measurement) -> dict[str, object]:
    """Return a measurement's fields with null for NaN and infinity, which JSON cannot hold.

    The cache reads null back as NaN, so the gate still reports such a check as an error.
    """
    return {
        name: None if isinstance(value, float) and not math.isfinite(value) else value
        for name, value in measurement.to_dict().items()
    }


def _from_json(values: Mapping[str, object]) -> dict[str, object]:
    return {
        name: float("nan") if value is None and name in ("mean", "ci_low", "ci_high") else value
        for name, value in values.items()
    }


def source_sha256(path: Path) -> str:
    """Return the SHA-256 of a weights file, or of every file in a model folder.

    An identity model may be an InsightFace folder; its checksum covers each file's relative
    path and bytes, in sorted order.
    """
    from harness.generator.loading import file_sha256

    path = Path(path).expanduser()
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode("utf-8"))
        digest.update(bytes.fromhex(file_sha256(file)))
    return digest.hexdigest()
