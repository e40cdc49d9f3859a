"""rosinality/stylegan2-pytorch checkpoints: read `g_ema` state dicts, write the convert_weight.py form.

Two forms are read. `convert_weight.py` writes `{"g_ema": state_dict, "latent_avg": [w_dim]}`;
training writes `{"g", "d", "g_ema", "g_optim", "d_optim", "args"}` and no average latent.

rosinality names the layers in order rather than by resolution: `conv1` and `to_rgb1` belong to
the 4 px block, `convs.{2b-2}` (up-sampling) and `convs.{2b-1}` to block b >= 1 (8 px, 16 px,
...), `to_rgbs.{b-1}` is that block's ToRGB and `noises.noise_{j}` the noise map of the j-th
conv in that order. Its modulated conv weights carry a leading dimension of 1, and the blur
kernels are stored already multiplied by 4 (the up-sampling factor squared).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from harness.errors import CheckpointError, ConfigError
from harness.generator.architecture import DEFAULT_MAPPING_LR_MULTIPLIER, Architecture
from harness.generator.network import FALLBACK_NOISE_SEED, Generator
from harness.generator.ops import UPSAMPLE_GAIN
from harness.generator.state import KeyMapping, LoadedWeights, map_state, require_tensor

log = logging.getLogger(__name__)

_STYLE_KEY = re.compile(r"style\.(\d+)\.weight")
_CONV_KEY = re.compile(r"convs\.(\d+)\.conv\.weight")


def read_rosinality(checkpoint: dict, *, path: str, format_name: str) -> LoadedWeights:
    """Map a rosinality checkpoint dict (either form) onto the generator's names."""
    g_ema = checkpoint.get("g_ema")
    if not isinstance(g_ema, dict):
        raise CheckpointError(
            f"{path}: 'g_ema' is a {type(g_ema).__name__}, not a state dict; a rosinality "
            "checkpoint stores the generator's state dict under 'g_ema'"
        )
    arch = infer_architecture(g_ema, path=path, format_name=format_name)
    state, absent = map_state(
        g_ema, key_mappings(arch), path=path, format_name=format_name, arch=arch
    )
    if absent:
        _fill_noise(state, absent, arch)
        log.warning(
            "%s has no noise buffers %s; noise_mode='const' uses noise maps drawn with seed %d "
            "instead, so images differ from those rendered with the original noise",
            path,
            ", ".join(m.source for m in absent),
            FALLBACK_NOISE_SEED,
        )

    w_avg = None
    latent_avg = checkpoint.get("latent_avg")
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != arch.w_dim:
            shape = list(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
            raise CheckpointError(
                f"{path}: latent_avg has shape {shape} but [{arch.w_dim}] (w_dim) is expected"
            )
        w_avg = latent_avg.detach().reshape(arch.w_dim).to(torch.float32)
    return LoadedWeights(arch, state, w_avg, noise_generated=bool(absent))


def infer_architecture(g_ema: dict, *, path: str, format_name: str) -> Architecture:
    """Infer resolution, mapping sizes and the channel table from rosinality tensor shapes."""
    style_indices = sorted(int(m.group(1)) for key in g_ema if (m := _STYLE_KEY.fullmatch(str(key))))
    if not style_indices or style_indices != list(range(1, len(style_indices) + 1)):
        raise CheckpointError(
            f"{path}: expected mapping layers style.1.weight ... style.N.weight in 'g_ema', found "
            f"indices {style_indices}; the file is not a complete rosinality StyleGAN2 generator"
        )

    conv_indices = sorted(int(m.group(1)) for key in g_ema if (m := _CONV_KEY.fullmatch(str(key))))
    if conv_indices != list(range(len(conv_indices))) or len(conv_indices) % 2:
        raise CheckpointError(
            f"{path}: expected convs.0 ... convs.{{2k-1}} (two per resolution above 4 px) in "
            f"'g_ema', found indices {conv_indices}"
        )

    num_mapping_layers = len(style_indices)
    first = require_tensor(g_ema, "style.1.weight", 2, path=path, format_name=format_name)
    last = require_tensor(
        g_ema, f"style.{num_mapping_layers}.weight", 2, path=path, format_name=format_name
    )
    const = require_tensor(g_ema, "input.input", 4, path=path, format_name=format_name)
    to_rgb = require_tensor(g_ema, "to_rgb1.conv.weight", 5, path=path, format_name=format_name)

    num_up_blocks = len(conv_indices) // 2
    channels = {4: int(const.shape[1])}
    for b in range(num_up_blocks):
        weight = require_tensor(
            g_ema, f"convs.{2 * b}.conv.weight", 5, path=path, format_name=format_name
        )
        channels[8 * 2**b] = int(weight.shape[1])

    try:
        return Architecture(
            resolution=4 * 2**num_up_blocks,
            z_dim=int(first.shape[1]),
            w_dim=int(last.shape[0]),
            num_mapping_layers=num_mapping_layers,
            mapping_hidden_dim=int(first.shape[0]),
            channels=channels,
            img_channels=int(to_rgb.shape[1]),
        )
    except ConfigError as error:
        raise CheckpointError(f"{path}: inferred an invalid architecture: {error}") from None


def key_mappings(arch: Architecture) -> list[KeyMapping]:
    """List every rosinality `g_ema` key of this architecture and the parameter it becomes."""
    mappings: list[KeyMapping] = []
    features = arch.mapping_features
    for i in range(arch.num_mapping_layers):
        shape = (features[i + 1], features[i])
        mappings.append(KeyMapping(f"style.{i + 1}.weight", f"mapping.layers.{i}.weight", shape, shape))
        mappings.append(
            KeyMapping(f"style.{i + 1}.bias", f"mapping.layers.{i}.bias", shape[:1], shape[:1])
        )

    c4 = arch.channels[4]
    mappings.append(KeyMapping("input.input", "synthesis.const", (1, c4, 4, 4), (c4, 4, 4)))
    mappings += _styled_conv("conv1", "synthesis.blocks.0.conv1", c4, c4, arch.w_dim, up=False)
    mappings += _to_rgb("to_rgb1", "synthesis.blocks.0.to_rgb", c4, arch, up=False)
    mappings.append(_noise(0, "synthesis.blocks.0.conv1", 4))
    for b, res in enumerate(arch.block_resolutions[1:], start=1):
        c_in, c_out = arch.channels[res // 2], arch.channels[res]
        block = f"synthesis.blocks.{b}"
        mappings += _styled_conv(f"convs.{2 * b - 2}", f"{block}.conv0", c_in, c_out, arch.w_dim, up=True)
        mappings += _styled_conv(f"convs.{2 * b - 1}", f"{block}.conv1", c_out, c_out, arch.w_dim, up=False)
        mappings += _to_rgb(f"to_rgbs.{b - 1}", f"{block}.to_rgb", c_out, arch, up=True)
        mappings.append(_noise(2 * b - 1, f"{block}.conv0", res))
        mappings.append(_noise(2 * b, f"{block}.conv1", res))
    return mappings


def save_rosinality_checkpoint(generator: Generator, path: str | Path) -> Path:
    """Write `generator` as `{"g_ema", "latent_avg"}` with rosinality's names and return the path.

    This is the form rosinality's convert_weight.py writes, including the noise buffers and the
    blur kernels, so rosinality's own `Generator` and `load_generator` both read it. Raises
    ConfigError for architectures that rosinality's `Generator` cannot express.
    """
    arch = generator.architecture
    problems = []
    if not arch.z_dim == arch.w_dim == arch.mapping_hidden_dim:
        problems.append(
            f"z_dim {arch.z_dim}, w_dim {arch.w_dim} and mapping_hidden_dim "
            f"{arch.mapping_hidden_dim} differ (rosinality uses one style_dim)"
        )
    if arch.img_channels != 3:
        problems.append(f"img_channels is {arch.img_channels} (rosinality writes RGB)")
    if arch.conv_clamp is not None:
        problems.append(f"conv_clamp is {arch.conv_clamp} (rosinality does not clamp)")
    if arch.mapping_lr_multiplier != DEFAULT_MAPPING_LR_MULTIPLIER:
        problems.append(
            f"mapping_lr_multiplier is {arch.mapping_lr_multiplier} (rosinality's files assume "
            f"{DEFAULT_MAPPING_LR_MULTIPLIER})"
        )
    if problems:
        raise ConfigError(
            "cannot write this generator in rosinality's format: " + "; ".join(problems)
            + ". Use convert_checkpoint's safetensors form instead"
        )

    state = generator.state_dict()
    g_ema = {
        m.source: m.to_source(state[m.target].detach().cpu()).clone() for m in key_mappings(arch)
    }
    path = Path(path)
    torch.save({"g_ema": g_ema, "latent_avg": generator.w_avg.detach().cpu().clone()}, path)
    log.info("wrote rosinality checkpoint %s", path)
    return path


def _styled_conv(prefix: str, target: str, c_in: int, c_out: int, w_dim: int, *, up: bool) -> list[KeyMapping]:
    mappings = [
        KeyMapping(f"{prefix}.conv.weight", f"{target}.weight", (1, c_out, c_in, 3, 3), (c_out, c_in, 3, 3)),
        KeyMapping(f"{prefix}.conv.modulation.weight", f"{target}.affine.weight", (c_in, w_dim), (c_in, w_dim)),
        KeyMapping(f"{prefix}.conv.modulation.bias", f"{target}.affine.bias", (c_in,), (c_in,)),
        KeyMapping(f"{prefix}.noise.weight", f"{target}.noise_strength", (1,), ()),
        KeyMapping(f"{prefix}.activate.bias", f"{target}.bias", (c_out,), (c_out,)),
    ]
    if up:
        mappings.append(_filter(f"{prefix}.conv.blur.kernel"))
    return mappings


def _to_rgb(prefix: str, target: str, c_in: int, arch: Architecture, *, up: bool) -> list[KeyMapping]:
    img, w_dim = arch.img_channels, arch.w_dim
    mappings = [
        KeyMapping(f"{prefix}.conv.weight", f"{target}.weight", (1, img, c_in, 1, 1), (img, c_in, 1, 1)),
        KeyMapping(f"{prefix}.conv.modulation.weight", f"{target}.affine.weight", (c_in, w_dim), (c_in, w_dim)),
        KeyMapping(f"{prefix}.conv.modulation.bias", f"{target}.affine.bias", (c_in,), (c_in,)),
        KeyMapping(f"{prefix}.bias", f"{target}.bias", (1, img, 1, 1), (img,)),
    ]
    if up:
        mappings.append(_filter(f"{prefix}.upsample.kernel"))
    return mappings


def _filter(source: str) -> KeyMapping:
    return KeyMapping(source, "synthesis.resample_filter", (4, 4), (4, 4), scale=1.0 / UPSAMPLE_GAIN)


def _noise(index: int, target: str, resolution: int) -> KeyMapping:
    return KeyMapping(
        f"noises.noise_{index}",
        f"{target}.noise_const",
        (1, 1, resolution, resolution),
        (resolution, resolution),
        optional=True,
    )


def _fill_noise(state: dict[str, torch.Tensor], absent: list[KeyMapping], arch: Architecture) -> None:
    """Fill absent noise maps with maps drawn in layer order from FALLBACK_NOISE_SEED.

    All layers' maps are drawn, so a layer gets the same map whichever others are absent.
    """
    absent_targets = {m.target for m in absent}
    rng = torch.Generator().manual_seed(FALLBACK_NOISE_SEED)
    for m in key_mappings(arch):
        if not m.source.startswith("noises."):
            continue
        noise = torch.randn(m.target_shape, generator=rng)
        if m.target in absent_targets:
            state[m.target] = noise
