"""LatentGate's safetensors form of a generator: tensors under the generator's own names.

The file's metadata (string to string, as safetensors requires) holds:

    format            "latentgate-stylegan2"
    format_version    "1"
    architecture      JSON of Architecture.to_dict()
    w_avg             JSON list of w_dim floats, exact because JSON keeps each float32 as a double
    w_avg_estimated   "true" when w_avg was estimated rather than read from the original file
    noise_generated   "true" when the noise maps were drawn from a fixed seed
    source_format, source_sha256, source_name   provenance of the converted file

`mapping.w_avg` is kept in the metadata rather than among the tensors, so every tensor in the
file is a network weight or noise map.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from harness.errors import CheckpointError, ConfigError
from harness.generator.architecture import Architecture
from harness.generator.network import Generator
from harness.generator.state import KeyMapping, LoadedWeights, map_state


FORMAT_TAG = "latentgate-stylegan2"
FORMAT_VERSION = "1"
W_AVG_KEY = "mapping.w_avg"
# safetensors files start with the header length as a little-endian u64, then the JSON header.
_HEADER_LENGTH_BYTES = 8


def looks_like_safetensors(head: bytes, file_size: int) -> bool:
    """Return True when the first bytes are a plausible safetensors header."""
    if len(head) <= _HEADER_LENGTH_BYTES:
        return False
    header_length = int.from_bytes(head[:_HEADER_LENGTH_BYTES], "little")
    return 0 < header_length <= file_size - _HEADER_LENGTH_BYTES and head[8:9] == b"{"


def write_safetensors(generator: Generator, path: Path) -> None:
    """Write the generator's weights and metadata to `path`."""
    tensors = {
        key: value.detach().to("cpu", torch.float32).contiguous().clone()
        for key, value in generator.state_dict().items()
        if key != W_AVG_KEY
    }
    source = generator.source
    metadata = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "architecture": json.dumps(generator.architecture.to_dict()),
        "w_avg": json.dumps([float(value) for value in generator.w_avg.detach().cpu()]),
        "w_avg_estimated": json.dumps(bool(source.w_avg_estimated)),
        "noise_generated": json.dumps(bool(source.noise_generated)),
        "source_format": source.format,
        "source_sha256": source.sha256 or "",
        "source_name": Path(source.path).name if source.path else "",
    }
    save_file(tensors, str(path), metadata=metadata)


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
    if metadata.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{path}: this safetensors file has no LatentGate generator metadata (format is "
            f"{metadata.get('format')!r}, expected {FORMAT_TAG!r}); create it with "
            "'latentgate convert SRC DST.safetensors'"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {metadata.get('format_version')!r} is not supported; this "
            f"version of LatentGate reads version {FORMAT_VERSION}"
        )
    try:
        arch = Architecture.from_dict(json.loads(metadata["architecture"]))
        w_avg_values = json.loads(metadata["w_avg"])
        w_avg_estimated = json.loads(metadata.get("w_avg_estimated", "false"))
        noise_generated = json.loads(metadata.get("noise_generated", "false"))
    except KeyError as error:
        raise CheckpointError(f"{path}: metadata key {error} is missing; convert the file again") from None
    except (json.JSONDecodeError, ConfigError) as error:
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
