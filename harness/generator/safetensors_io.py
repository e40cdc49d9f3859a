"""LatentGate's safetensors form of a generator: tensors under the generator's own names.

The file's metadata (string to string, as safetensors requires) has one key, `latentgate`,
whose value is JSON with sorted keys and no spaces:

    format            "latentgate-stylegan2"
    format_version    2
    architecture      Architecture.to_dict()
    w_avg             list of w_dim floats, exact because JSON keeps each float32 as a double
    w_avg_estimated   true when w_avg was estimated rather than read from the original file
    noise_generated   true when the noise maps were drawn from a fixed seed
    source_format, source_sha256, source_name   provenance of the converted file

One key makes conversion byte-for-byte repeatable: safetensors 0.8 writes metadata keys in
hash-map order, which changes from one process to the next. Version 1 files, which stored
each field above as its own metadata key with JSON-encoded values, are still read.

`mapping.w_avg` is kept in the metadata rather than among the tensors, so every tensor in the
file is a network weight or noise map.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from harness.errors import CheckpointError, ConfigError
from harness.generator.architecture import Architecture
from harness.generator.network import Generator
from harness.generator.state import KeyMapping, LoadedWeights, map_state


FORMAT_TAG = "latentgate-stylegan2"
FORMAT_VERSION = 2
METADATA_KEY = "latentgate"
LEGACY_FORMAT_VERSION = "1"
W_AVG_KEY = "mapping.w_avg"
# safetensors files start with the header length as a little-endian u64, then the JSON header.
_HEADER_LENGTH_BYTES = 8
# safetensors rejects headers over 100 MB; a length prefix above that is not a safetensors file.
_MAX_HEADER_BYTES = 100_000_000


def looks_like_safetensors(head: bytes, file_size: int) -> bool:
    """Return True when the first bytes are a plausible safetensors header."""
    if len(head) <= _HEADER_LENGTH_BYTES:
        return False
    header_length = int.from_bytes(head[:_HEADER_LENGTH_BYTES], "little")
    return 0 < header_length <= file_size - _HEADER_LENGTH_BYTES and head[8:9] == b"{"


def looks_like_truncated_safetensors(head: bytes, file_size: int) -> bool:
    """Return True for a safetensors start whose declared header runs past the end of the file."""
    if len(head) <= _HEADER_LENGTH_BYTES:
        return False
    header_length = int.from_bytes(head[:_HEADER_LENGTH_BYTES], "little")
    return file_size - _HEADER_LENGTH_BYTES < header_length <= _MAX_HEADER_BYTES and head[8:9] == b"{"


def write_safetensors(generator: Generator, path: Path) -> None:
    """Write the generator's weights and metadata to `path`, with the mode a new file gets.

    The same generator always gives the same bytes.
    """
    tensors = {
        key: value.detach().to("cpu", torch.float32).contiguous().clone()
        for key, value in generator.state_dict().items()
        if key != W_AVG_KEY
    }
    source = generator.source
    record = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "architecture": generator.architecture.to_dict(),
        "w_avg": [float(value) for value in generator.w_avg.detach().cpu()],
        "w_avg_estimated": bool(source.w_avg_estimated),
        "noise_generated": bool(source.noise_generated),
        "source_format": source.format,
        "source_sha256": source.sha256 or "",
        "source_name": Path(source.path).name if source.path else "",
    }
    metadata = {METADATA_KEY: json.dumps(record, sort_keys=True, separators=(",", ":"))}
    mode = _new_file_mode(path)
    save_file(tensors, str(path), metadata=metadata)
    # save_file (safetensors 0.8) creates the file with mode 0600 whatever the umask is.
    os.chmod(path, mode)


def _new_file_mode(path: Path) -> int:
    """Create `path` empty and return the permission bits the process umask gave it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        return stat.S_IMODE(os.fstat(descriptor).st_mode)
    finally:
        os.close(descriptor)


def read_safetensors(path: Path) -> LoadedWeights:
    """Read a file written by `write_safetensors`, checking every key and shape."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: cannot read this safetensors file, it is truncated or corrupt ({error}); "
            "convert the original checkpoint again"
        ) from None
    record = _read_record(metadata, path)
    try:
        arch = Architecture.from_dict(record["architecture"])
        w_avg_values = record["w_avg"]
        w_avg_estimated = record.get("w_avg_estimated", False)
        noise_generated = record.get("noise_generated", False)
    except KeyError as error:
        raise CheckpointError(f"{path}: metadata key {error} is missing; convert the file again") from None
    except (ConfigError, AttributeError, TypeError) as error:
        raise CheckpointError(f"{path}: invalid metadata: {error}; convert the file again") from None
    if not isinstance(w_avg_values, list) or len(w_avg_values) != arch.w_dim:
        raise CheckpointError(
            f"{path}: metadata w_avg must be a list of {arch.w_dim} numbers (w_dim); convert the "
            "file again"
        )
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in Generator(arch).state_dict().items()}
    mappings = [KeyMapping(key, key, shape, shape) for key, shape in shapes.items() if key != W_AVG_KEY]
    state, _ = map_state(tensors, mappings, path=str(path), format_name="safetensors", arch=arch)
    return LoadedWeights(
        arch,
        state,
        torch.tensor(w_avg_values, dtype=torch.float32),
        w_avg_estimated=bool(w_avg_estimated),
        noise_generated=bool(noise_generated),
    )


def _read_record(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    """Return the metadata fields as one dict, from a version 2 or a version 1 file."""
    try:
        if METADATA_KEY in metadata:
            record = json.loads(metadata[METADATA_KEY])
        elif metadata.get("format") == FORMAT_TAG:
            record = _read_legacy_record(metadata)
        else:
            record = {}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: invalid metadata: {error}; convert the file again") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_TAG:
        found = record.get("format") if isinstance(record, dict) else None
        raise CheckpointError(
            f"{path}: this safetensors file has no LatentGate generator metadata (format is "
            f"{found!r}, expected {FORMAT_TAG!r}); create it with "
            "'latentgate convert SRC DST.safetensors'"
        )
    if record.get("format_version") not in (FORMAT_VERSION, LEGACY_FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: format_version {record.get('format_version')!r} is not supported; this "
            f"version of LatentGate reads versions 1 and {FORMAT_VERSION}"
        )
    return record


def _read_legacy_record(metadata: dict[str, str]) -> dict[str, Any]:
    """Decode a version 1 file, whose fields are separate keys with JSON-encoded values."""
    record: dict[str, Any] = dict(metadata)
    for key in ("architecture", "w_avg", "w_avg_estimated", "noise_generated"):
        if key in record:
            record[key] = json.loads(record[key])
    return record
