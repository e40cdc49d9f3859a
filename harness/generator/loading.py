"""`load_generator`: detect a checkpoint's format from its bytes and build a `Generator` from it.

Formats are recognised by content, not by file name:

- a zip archive or a legacy `torch.save` file, read with `torch.load(weights_only=True)`:
  rosinality `{"g_ema", "latent_avg"}`, rosinality training checkpoints
  `{"g", "d", "g_ema", "g_optim", "d_optim", "args"}` or NVIDIA `{"init_kwargs", "state_dict"}`;
- a plain pickle: an NVlabs/stylegan2-ada-pytorch network pickle, read by `nvidia_pickle`
  without importing or running anything from the file;
- safetensors: LatentGate's own form, written by `convert_checkpoint`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import pickle
import re
import zipfile
from pathlib import Path

import torch

from harness.errors import CheckpointError, ConfigError
from harness.generator import nvidia, nvidia_pickle, rosinality, safetensors_io
from harness.generator.architecture import Architecture
from harness.generator.network import (
    W_AVG_ESTIMATE_SAMPLES,
    W_AVG_ESTIMATE_SEED,
    Generator,
    GeneratorSource,
)
from harness.generator.state import LoadedWeights, describe

log = logging.getLogger(__name__)

ROSINALITY_TRAINING_KEYS = {"g", "d", "g_ema", "g_optim", "d_optim", "args"}
PICKLE_PROTOCOL_OPCODE = 0x80
# Legacy (pre-1.6) torch.save files start with a pickled magic number: PROTO 2, LONG1 of 10 bytes.
LEGACY_TORCH_PREFIX = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
ZIP_MAGIC = b"PK\x03\x04"
# torch's weights_only error names the first class it rejected as "GLOBAL module.Name".
_REJECTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_MAX_DETAIL_CHARS = 100


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a StyleGAN2 generator checkpoint of any supported format onto `device`.

    The result is in eval mode with gradients disabled for its parameters; gradients still flow
    to ws. `generator.source` records the format, path, sha256 and inferred architecture.
    Raises CheckpointError (or UnsafeCheckpointError) for files it cannot load, ConfigError for
    an unavailable device.
    """
    path = Path(path)
    device = parse_device(device)
    kind = detect_kind(path)
    text_path = str(path)
    if kind == "safetensors":
        loaded = safetensors_io.read_safetensors(path)
        format_name = "safetensors"
    elif kind == "pickle":
        init_kwargs, state_dict = nvidia_pickle.read_network_pickle(path)
        format_name = "nvidia-pickle"
        loaded = nvidia.read_nvidia_state(init_kwargs, state_dict, path=text_path, format_name=format_name)
    else:
        checkpoint = _torch_load(path)
        format_name, loaded = _read_torch_checkpoint(checkpoint, text_path)

    generator = assemble_generator(loaded, device=device)
    if loaded.w_avg is None:
        log.warning(
            "%s stores no average latent; estimated w_avg from %d mapped samples (seed %d), so "
            "truncation centres on an estimate",
            path,
            W_AVG_ESTIMATE_SAMPLES,
            W_AVG_ESTIMATE_SEED,
        )
    generator.source = GeneratorSource(
        format=format_name,
        path=str(path.resolve()),
        sha256=file_sha256(path),
        architecture=loaded.architecture.to_dict(),
        w_avg_estimated=loaded.w_avg is None or loaded.w_avg_estimated,
        noise_generated=loaded.noise_generated,
    )
    log.info("loaded %s generator %s: %s", format_name, path, describe(loaded.architecture))
    return generator


def build_generator(architecture: Architecture | dict, device: str | torch.device = "cpu") -> Generator:
    """Construct a freshly initialised, trainable generator from an architecture record."""
    if not isinstance(architecture, Architecture):
        architecture = Architecture.from_dict(architecture)
    return Generator(architecture).to(parse_device(device))


def assemble_generator(loaded: LoadedWeights, device: torch.device) -> Generator:
    """Build a generator from mapped weights; estimate w_avg when the checkpoint has none."""
    generator = Generator(loaded.architecture)
    result = generator.load_state_dict(loaded.state, strict=False)
    # map_state has already reported the checkpoint's problems; what remains is a loader bug.
    allowed_missing = {"mapping.w_avg"}
    if loaded.architecture.resolution == 4:
        allowed_missing.add("synthesis.resample_filter")  # no resampling at 4 px: never stored
    assert set(result.missing_keys) <= allowed_missing, result.missing_keys
    assert not result.unexpected_keys, result.unexpected_keys
    generator = generator.to(device)
    if loaded.w_avg is not None:
        generator.mapping.w_avg.copy_(loaded.w_avg)
    else:
        generator.estimate_w_avg()
    return generator.eval().requires_grad_(False)


def detect_kind(path: Path) -> str:
    """Return "torch", "pickle" or "safetensors" from the file's first bytes."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; check the generator path")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file; pass the file inside it")
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(16)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the file: {error.strerror}") from None
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty; it was probably not written completely")
    if head.startswith(ZIP_MAGIC) or head.startswith(LEGACY_TORCH_PREFIX):
        return "torch"
    if safetensors_io.looks_like_safetensors(head, size):
        return "safetensors"
    if safetensors_io.looks_like_truncated_safetensors(head, size):
        declared = int.from_bytes(head[:8], "little")
        raise CheckpointError(
            f"{path}: this safetensors file is truncated or corrupt: its header declares "
            f"{declared} bytes but the file has only {size}; convert the original checkpoint again"
        )
    if len(head) >= 2 and head[0] == PICKLE_PROTOCOL_OPCODE and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return "pickle"
    raise CheckpointError(
        f"{path}: not a generator checkpoint: it is neither a torch.save file, a pickle nor a "
        "safetensors file (first bytes "
        f"{head[:8]!r}); pass a rosinality .pt, an NVIDIA .pkl or a .safetensors file"
    )


def parse_device(device: str | torch.device) -> torch.device:
    """Return a torch.device, raising ConfigError for a malformed or unavailable one."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"invalid device {device!r}: {error}; use e.g. 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested but CUDA is not available; use 'cpu'")
    return device


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _torch_load(path: Path) -> object:
    """torch.load with weights_only=True; argparse.Namespace is the one extra class allowed.

    rosinality's training checkpoints store their command-line arguments as a Namespace. The
    file is passed as an open file object because torch.load (2.14) picks its reader from a
    path's extension, and a torch file named `*.safetensors` would go to the safetensors reader.
    """
    if hasattr(torch.serialization, "safe_globals"):
        allow_namespace = torch.serialization.safe_globals([argparse.Namespace])
    else:  # torch 2.4 has only the process-wide allow list
        torch.serialization.add_safe_globals([argparse.Namespace])
        allow_namespace = contextlib.nullcontext()
    try:
        with allow_namespace, path.open("rb") as file:
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refusing to load: the file contains Python objects other than "
            f"tensors{_describe_rejected_global(error)}, and loading them could run code from the "
            "file; save a state dict instead, e.g. torch.save({'g_ema': g_ema.state_dict(), "
            "'latent_avg': latent_avg}, path)"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"{path}: cannot read this torch checkpoint: the file is truncated or corrupt"
            f"{_short_detail(error)}; download or copy it again"
        ) from None


def _describe_rejected_global(error: pickle.UnpicklingError) -> str:
    """Return " (NAME)" for the class torch rejected, noting when it is an nn.Module, or ""."""
    match = _REJECTED_GLOBAL.search(_strip_ansi(str(error)))
    if match is None:
        return ""
    name = match.group(1)
    if name.startswith("torch.nn.modules."):
        return f" ({name}: a whole nn.Module, not a state dict)"
    return f" ({name})"


def _short_detail(error: BaseException) -> str:
    """Return " (first sentence of the error)" when it is short, else ""."""
    text = _strip_ansi(str(error)).strip()
    first_sentence = text.split(". ")[0].splitlines()[0].strip().rstrip(".") if text else ""
    if not first_sentence or len(first_sentence) > _MAX_DETAIL_CHARS or isinstance(error, OSError):
        # OSError text from reading a cut-off file ("[Errno 22] Invalid argument") says nothing useful.
        return ""
    return f" ({first_sentence})"


def _strip_ansi(text: str) -> str:
    return _ANSI_ESCAPE.sub("", text)


def _read_torch_checkpoint(checkpoint: object, path: str) -> tuple[str, LoadedWeights]:
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path}: the file contains a {type(checkpoint).__name__}, not a checkpoint dict; "
            "expected rosinality's {'g_ema', 'latent_avg'} or NVIDIA's "
            "{'init_kwargs', 'state_dict'}"
        )
    if "g_ema" in checkpoint:
        format_name = "rosinality-train" if ROSINALITY_TRAINING_KEYS <= set(checkpoint) else "rosinality"
        return format_name, rosinality.read_rosinality(checkpoint, path=path, format_name=format_name)
    if "init_kwargs" in checkpoint and "state_dict" in checkpoint:
        format_name = "nvidia-state"
        loaded = nvidia.read_nvidia_state(
            checkpoint["init_kwargs"], checkpoint["state_dict"], path=path, format_name=format_name
        )
        return format_name, loaded
    keys = ", ".join(sorted(str(key) for key in checkpoint)[:12]) or "none"
    raise CheckpointError(
        f"{path}: unrecognised checkpoint layout (top-level keys: {keys}); expected rosinality's "
        "'g_ema' (with 'latent_avg' or a training checkpoint's 'g', 'd', 'args') or NVIDIA's "
        "'init_kwargs' and 'state_dict'"
    )
