"""Strict mapping of a checkpoint's tensors onto the generator's own parameter names.

Each format module lists, for the architecture it inferred, every key the checkpoint must
contain: its name in the file, its shape there, the parameter it becomes and how its layout
changes. `map_state` checks the file against that list and reports every missing key,
unexpected key and shape mismatch at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from harness.errors import CheckpointError
from harness.generator.architecture import Architecture

MAX_KEYS_LISTED = 12


@dataclass(frozen=True)
class KeyMapping:
    """One tensor of a checkpoint and the generator parameter it becomes.

    target = source.reshape(target_shape) * scale, and back: source = target.reshape(source_shape)
    / scale. Only reshapes and one scale occur between the formats this package reads.
    """

    source: str  # key in the checkpoint
    target: str  # key in Generator.state_dict()
    source_shape: tuple[int, ...]  # shape the architecture requires in the checkpoint
    target_shape: tuple[int, ...]
    scale: float = 1.0
    optional: bool = False  # may be absent; the caller fills the target in

    def to_target(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.reshape(self.target_shape)
        return tensor * self.scale if self.scale != 1.0 else tensor

    def to_source(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.reshape(self.source_shape)
        return tensor / self.scale if self.scale != 1.0 else tensor


@dataclass
class LoadedWeights:
    """A checkpoint mapped to the generator's names, ready to become a `Generator`."""

    architecture: Architecture
    state: dict[str, torch.Tensor]  # Generator.state_dict() keys, except mapping.w_avg
    w_avg: torch.Tensor | None  # None: not stored, estimate it
    w_avg_estimated: bool = False  # the stored w_avg is itself an estimate (safetensors records it)
    noise_generated: bool = False  # noise maps were drawn from a fixed seed, not read from a file


def map_state(
    source_state: dict[str, object],
    mappings: Iterable[KeyMapping],
    *,
    path: str,
    format_name: str,
    arch: Architecture,
    ignored: Iterable[str] = (),
) -> tuple[dict[str, torch.Tensor], list[KeyMapping]]:
    """Check `source_state` against `mappings` and return (target state, absent optional keys).

    Several sources may map to one target (the per-layer copies of the resampling filter); they
    must then hold equal values. `ignored` lists keys that the caller has already read.
    Raises CheckpointError naming every missing or unexpected key and every shape mismatch.
    """
    mappings = list(mappings)
    source_state = {key: value for key, value in source_state.items() if value is not None}
    expected = {m.source for m in mappings} | set(ignored)
    unexpected = sorted(str(key) for key in source_state if key not in expected)
    missing = [m.source for m in mappings if m.source not in source_state and not m.optional]
    absent_optional = [m for m in mappings if m.source not in source_state and m.optional]

    problems = []
    if missing:
        problems.append(f"missing keys: {_list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list_keys(unexpected)}")
    mismatches = []
    not_tensors = []
    for m in mappings:
        value = source_state.get(m.source)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            not_tensors.append(f"{m.source} ({type(value).__name__})")
        elif tuple(value.shape) != m.source_shape:
            mismatches.append(
                f"{m.source} has shape {list(value.shape)} but {list(m.source_shape)} is expected"
            )
    if not_tensors:
        problems.append(f"values that are not tensors: {_list_keys(not_tensors)}")
    if mismatches:
        problems.append("shape mismatch: " + "; ".join(mismatches[:MAX_KEYS_LISTED]))
    if problems:
        raise CheckpointError(
            f"{path}: the {format_name} checkpoint does not match the generator its shapes "
            f"describe ({describe(arch)}): " + "; ".join(problems) + ". Only noise buffers "
            "may be missing; check that the file is a complete StyleGAN2 generator of this kind"
        )

    target_state: dict[str, torch.Tensor] = {}
    target_source: dict[str, str] = {}
    for m in mappings:
        value = source_state.get(m.source)
        if value is None:
            continue
        tensor = m.to_target(value.detach().to(torch.float32))
        if m.target in target_state:
            if not torch.equal(target_state[m.target], tensor):
                raise CheckpointError(
                    f"{path}: {m.source} differs from {target_source[m.target]}, but this loader "
                    "needs one resampling filter for the whole network; the checkpoint uses "
                    "per-layer filters, which are not supported"
                )
            continue
        target_state[m.target] = tensor.contiguous()
        target_source[m.target] = m.source
    return target_state, absent_optional


def describe(arch: Architecture) -> str:
    """Return a one-line summary of an architecture for messages and logs."""
    channels = ", ".join(f"{res}:{ch}" for res, ch in sorted(arch.channels.items()))
    text = (
        f"{arch.resolution} px, z_dim {arch.z_dim}, w_dim {arch.w_dim}, "
        f"{arch.num_mapping_layers} mapping layers, num_ws {arch.num_ws}, channels {{{channels}}}"
    )
    if arch.conv_clamp is not None:
        text += f", conv_clamp {arch.conv_clamp:g}"
    return text


def require_tensor(state: dict[str, object], key: str, ndim: int, *, path: str, format_name: str) -> torch.Tensor:
    """Return `state[key]` if it is a tensor with `ndim` dimensions, else raise CheckpointError.

    Used while inferring the architecture, before the full key check can run.
    """
    value = state.get(key)
    if value is None:
        raise CheckpointError(
            f"{path}: the {format_name} checkpoint has no {key}, which is needed to infer the "
            "architecture; the file is incomplete or is not a StyleGAN2 generator"
        )
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CheckpointError(
            f"{path}: {key} has shape {shape} but a {ndim}-dimensional tensor is expected"
        )
    return value


def _list_keys(keys: list[str]) -> str:
    listed = ", ".join(keys[:MAX_KEYS_LISTED])
    if len(keys) > MAX_KEYS_LISTED:
        listed += f" and {len(keys) - MAX_KEYS_LISTED} more"
    return listed
