"""NVlabs/stylegan2-ada-pytorch generators given as plain tensors: `init_kwargs` + `state_dict`.

The pickle reader (`nvidia_pickle`) recovers the same two objects from a network pickle, so both
forms go through `read_nvidia_state`. NVIDIA names blocks by resolution (`synthesis.b{res}`)
and keeps a copy of the normalised resampling filter in every block and layer. It applies no
1 / sqrt(fan_in) gain to modulated conv weights, which demodulation cancels. The gain only
changes how much the 1e-8 under the square root weighs, by about 1e-8 * fan_in / (2 * sum of
squared modulated weights), far below float32 resolution unless the styles are near zero.

Compared with rosinality, NVIDIA adds `conv_clamp`, which clamps conv and ToRGB outputs. The
tensors do not show it, so it is read from `init_kwargs`. Layers that NVIDIA runs in float16
(`num_fp16_res`) run here in float32, as NVIDIA's `force_fp32=True` does.
"""

from __future__ import annotations

import logging
import re

import torch

from harness.errors import CheckpointError, ConfigError
from harness.generator.architecture import DEFAULT_MAPPING_LR_MULTIPLIER, Architecture
from harness.generator.state import KeyMapping, LoadedWeights, map_state, require_tensor

log = logging.getLogger(__name__)

_FC_KEY = re.compile(r"mapping\.fc(\d+)\.weight")
_BLOCK_KEY = re.compile(r"synthesis\.b(\d+)\..*")
_SUPPORTED_SYNTHESIS_ARCHITECTURE = "skip"


def read_nvidia_state(
    init_kwargs: object, state_dict: object, *, path: str, format_name: str
) -> LoadedWeights:
    """Map an NVIDIA generator's constructor arguments and state dict onto the generator's names."""
    if not isinstance(init_kwargs, dict):
        raise CheckpointError(
            f"{path}: init_kwargs is a {type(init_kwargs).__name__}, not a dict of the "
            "generator's constructor arguments"
        )
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f"{path}: state_dict is a {type(state_dict).__name__}, not a dict of tensors"
        )
    _check_supported(init_kwargs, state_dict, path=path)
    arch = infer_architecture(init_kwargs, state_dict, path=path, format_name=format_name)
    state, _ = map_state(
        state_dict,
        key_mappings(arch),
        path=path,
        format_name=format_name,
        arch=arch,
        ignored=["mapping.w_avg"],
    )
    w_avg = state_dict.get("mapping.w_avg")
    if w_avg is not None:
        if not isinstance(w_avg, torch.Tensor) or tuple(w_avg.shape) != (arch.w_dim,):
            shape = list(w_avg.shape) if isinstance(w_avg, torch.Tensor) else type(w_avg).__name__
            raise CheckpointError(
                f"{path}: mapping.w_avg has shape {shape} but [{arch.w_dim}] (w_dim) is expected"
            )
        w_avg = w_avg.detach().to(torch.float32)
    synthesis_kwargs = init_kwargs.get("synthesis_kwargs") or {}
    if synthesis_kwargs.get("num_fp16_res", 0):
        log.info(
            "%s: the %d highest resolutions were trained in float16; they run in float32 here",
            path,
            synthesis_kwargs["num_fp16_res"],
        )
    return LoadedWeights(arch, state, w_avg)


def infer_architecture(
    init_kwargs: dict, state_dict: dict, *, path: str, format_name: str
) -> Architecture:
    """Infer the architecture from NVIDIA tensor shapes; take conv_clamp from init_kwargs."""
    fc_indices = sorted(int(m.group(1)) for key in state_dict if (m := _FC_KEY.fullmatch(str(key))))
    if not fc_indices or fc_indices != list(range(len(fc_indices))):
        raise CheckpointError(
            f"{path}: expected mapping layers mapping.fc0.weight ... mapping.fcN.weight, found "
            f"indices {fc_indices}; the file is not a complete stylegan2-ada-pytorch generator"
        )

    block_resolutions = sorted(
        {int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.fullmatch(str(key)))}
    )
    if not block_resolutions or block_resolutions != [2**i for i in range(2, 2 + len(block_resolutions))]:
        raise CheckpointError(
            f"{path}: expected synthesis blocks synthesis.b4, synthesis.b8, ... up to the output "
            f"resolution, found {['b' + str(res) for res in block_resolutions]}"
        )

    first = require_tensor(state_dict, "mapping.fc0.weight", 2, path=path, format_name=format_name)
    last = require_tensor(
        state_dict, f"mapping.fc{len(fc_indices) - 1}.weight", 2, path=path, format_name=format_name
    )
    channels = {}
    for res in block_resolutions:
        weight = require_tensor(
            state_dict, f"synthesis.b{res}.conv1.weight", 4, path=path, format_name=format_name
        )
        channels[res] = int(weight.shape[0])

    resolution = block_resolutions[-1]
    to_rgb = require_tensor(
        state_dict, f"synthesis.b{resolution}.torgb.weight", 4, path=path, format_name=format_name
    )

    mapping_kwargs = init_kwargs.get("mapping_kwargs") or {}
    synthesis_kwargs = init_kwargs.get("synthesis_kwargs") or {}
    try:
        arch = Architecture(
            resolution=resolution,
            z_dim=int(first.shape[1]),
            w_dim=int(last.shape[0]),
            num_mapping_layers=len(fc_indices),
            mapping_hidden_dim=int(first.shape[0]),
            channels=channels,
            img_channels=int(to_rgb.shape[0]),
            mapping_lr_multiplier=float(
                mapping_kwargs.get("lr_multiplier", DEFAULT_MAPPING_LR_MULTIPLIER)
            ),
            conv_clamp=_optional_float(synthesis_kwargs.get("conv_clamp")),
        )
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: inferred an invalid architecture: {error}") from None

    _check_declared(init_kwargs, arch, path=path)
    return arch


def key_mappings(arch: Architecture) -> list[KeyMapping]:
    """List every NVIDIA state-dict key of this architecture and the parameter it becomes."""
    mappings: list[KeyMapping] = []
    features = arch.mapping_features
    for i in range(arch.num_mapping_layers):
        shape = (features[i + 1], features[i])
        mappings.append(_same(f"mapping.fc{i}.weight", f"mapping.layers.{i}.weight", shape))
        mappings.append(_same(f"mapping.fc{i}.bias", f"mapping.layers.{i}.bias", shape[:1]))

    c4 = arch.channels[4]
    mappings.append(_same("synthesis.b4.const", "synthesis.const", (c4, 4, 4)))
    for b, res in enumerate(arch.block_resolutions):
        source, target = f"synthesis.b{res}", f"synthesis.blocks.{b}"
        c_out = arch.channels[res]
        mappings.append(_same(f"{source}.resample_filter", "synthesis.resample_filter", (4, 4)))
        if res > 4:
            c_in = arch.channels[res // 2]
            mappings += _layer(f"{source}.conv0", f"{target}.conv0", c_in, c_out, arch.w_dim, res)
        mappings += _layer(f"{source}.conv1", f"{target}.conv1", c_out, c_out, arch.w_dim, res)
        img = arch.img_channels
        mappings += [
            _same(f"{source}.torgb.weight", f"{target}.to_rgb.weight", (img, c_out, 1, 1)),
            _same(f"{source}.torgb.bias", f"{target}.to_rgb.bias", (img,)),
            _same(f"{source}.torgb.affine.weight", f"{target}.to_rgb.affine.weight", (c_out, arch.w_dim)),
            _same(f"{source}.torgb.affine.bias", f"{target}.to_rgb.affine.bias", (c_out,)),
        ]
    return mappings


def _layer(source: str, target: str, c_in: int, c_out: int, w_dim: int, res: int) -> list[KeyMapping]:
    return [
        _same(f"{source}.weight", f"{target}.weight", (c_out, c_in, 3, 3)),
        _same(f"{source}.bias", f"{target}.bias", (c_out,)),
        _same(f"{source}.noise_strength", f"{target}.noise_strength", ()),
        _same(f"{source}.noise_const", f"{target}.noise_const", (res, res)),
        _same(f"{source}.affine.weight", f"{target}.affine.weight", (c_in, w_dim)),
        _same(f"{source}.affine.bias", f"{target}.affine.bias", (c_in,)),
        _same(f"{source}.resample_filter", "synthesis.resample_filter", (4, 4)),
    ]


def _same(source: str, target: str, shape: tuple[int, ...]) -> KeyMapping:
    return KeyMapping(source, target, shape, shape)


def _check_supported(init_kwargs: dict, state_dict: dict, *, path: str) -> None:
    """Raise CheckpointError for NVIDIA generator variants this package cannot run yet."""
    c_dim = init_kwargs.get("c_dim", 0)
    if c_dim or "mapping.embed.weight" in state_dict:
        raise CheckpointError(
            f"{path}: class-conditional generators (c_dim={c_dim}) are not supported yet; "
            "use an unconditional generator (c_dim=0)"
        )
    if any(str(key).startswith("synthesis.input.") for key in state_dict):
        raise CheckpointError(
            f"{path}: this is a StyleGAN3 generator (it has synthesis.input.*), which is not "
            "supported; use a StyleGAN2 or StyleGAN2-ADA generator"
        )
    synthesis_kwargs = init_kwargs.get("synthesis_kwargs") or {}
    mapping_kwargs = init_kwargs.get("mapping_kwargs") or {}
    if not isinstance(synthesis_kwargs, dict) or not isinstance(mapping_kwargs, dict):
        raise CheckpointError(
            f"{path}: init_kwargs mapping_kwargs and synthesis_kwargs must be dicts"
        )
    architecture = synthesis_kwargs.get("architecture", _SUPPORTED_SYNTHESIS_ARCHITECTURE)
    if architecture != _SUPPORTED_SYNTHESIS_ARCHITECTURE:
        raise CheckpointError(
            f"{path}: synthesis architecture {architecture!r} is not supported; only NVIDIA's "
            f"default {_SUPPORTED_SYNTHESIS_ARCHITECTURE!r} is"
        )
    for name, kwargs in (("mapping_kwargs", mapping_kwargs), ("synthesis_kwargs", synthesis_kwargs)):
        activation = kwargs.get("activation", "lrelu")
        if activation != "lrelu":
            raise CheckpointError(
                f"{path}: {name}.activation is {activation!r}; only 'lrelu' is supported"
            )


def _check_declared(init_kwargs: dict, arch: Architecture, *, path: str) -> None:
    """Raise CheckpointError when init_kwargs contradicts the sizes read from the tensors."""
    mapping_kwargs = init_kwargs.get("mapping_kwargs") or {}
    declared = {
        "z_dim": (init_kwargs.get("z_dim"), arch.z_dim),
        "w_dim": (init_kwargs.get("w_dim"), arch.w_dim),
        "img_resolution": (init_kwargs.get("img_resolution"), arch.resolution),
        "img_channels": (init_kwargs.get("img_channels"), arch.img_channels),
        "mapping_kwargs.num_layers": (mapping_kwargs.get("num_layers"), arch.num_mapping_layers),
    }
    conflicts = [
        f"{name} is {stated} but the tensors give {inferred}"
        for name, (stated, inferred) in declared.items()
        if stated is not None and stated != inferred
    ]
    if conflicts:
        raise CheckpointError(
            f"{path}: init_kwargs contradicts the tensor shapes: {'; '.join(conflicts)}; the "
            "file is inconsistent, re-export it from the generator that produced the tensors"
        )


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)
