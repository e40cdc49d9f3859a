"""The architecture record of a StyleGAN2 generator: every size the weights do not carry.

A loader infers the record from a checkpoint's tensor shapes, `build_generator` constructs a
network from it, and the safetensors form stores it as JSON in the file's metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError

# Both public implementations train the mapping network with a learning-rate multiplier of 0.01
# (rosinality's `lr_mlp`, NVIDIA's `lr_multiplier`). The stored weights are divided by it, so the
# forward pass multiplies it back. Neither checkpoint form records it in its tensors.
DEFAULT_MAPPING_LR_MULTIPLIER = 0.01


@dataclass(frozen=True)
class Architecture:
    """Sizes and constants of a StyleGAN2 generator with the 'skip' synthesis architecture."""

    resolution: int  # output height and width in pixels, a power of two >= 4
    z_dim: int  # length of the input latent z
    w_dim: int  # length of the intermediate latent w
    num_mapping_layers: int  # fully connected layers in the mapping network
    mapping_hidden_dim: int  # output features of every mapping layer but the last
    channels: dict[int, int] = field(hash=False)  # resolution -> feature channels of that block
    img_channels: int = 3  # colour channels of the output image
    mapping_lr_multiplier: float = DEFAULT_MAPPING_LR_MULTIPLIER
    conv_clamp: float | None = None  # NVIDIA clamps conv outputs to +-conv_clamp; None: no clamp

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def block_resolutions(self) -> list[int]:
        """Resolutions of the synthesis blocks, 4 up to `resolution`."""
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def mapping_features(self) -> list[int]:
        """Feature counts through the mapping network: z_dim, the hidden widths, then w_dim."""
        hidden = [self.mapping_hidden_dim] * (self.num_mapping_layers - 1)
        return [self.z_dim, *hidden, self.w_dim]

    @property
    def num_ws(self) -> int:
        """Number of W+ slots: two per block (one per conv) minus one, plus the last ToRGB."""
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; channel keys become strings."""
        return {
            "resolution": self.resolution,
            "z_dim": self.z_dim,
            "w_dim": self.w_dim,
            "num_mapping_layers": self.num_mapping_layers,
            "mapping_hidden_dim": self.mapping_hidden_dim,
            "channels": {str(res): ch for res, ch in sorted(self.channels.items())},
            "img_channels": self.img_channels,
            "mapping_lr_multiplier": self.mapping_lr_multiplier,
            "conv_clamp": self.conv_clamp,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Architecture:
        """Build a record from `to_dict` output; raise ConfigError naming a missing or bad key."""
        if not isinstance(record, dict):
            raise ConfigError(
                f"architecture must be a dict, got {type(record).__name__}; pass the output of "
                "Architecture.to_dict() or an Architecture"
            )

        required = ["resolution", "z_dim", "w_dim", "num_mapping_layers", "channels"]
        missing = [key for key in required if key not in record]
        if missing:
            raise ConfigError(
                f"architecture record is missing {', '.join(missing)}; it needs "
                f"{', '.join(required)}"
            )

        known = set(required) | {
            "mapping_hidden_dim",
            "img_channels",
            "mapping_lr_multiplier",
            "conv_clamp",
        }
        unknown = sorted(set(record) - known)
        if unknown:
            raise ConfigError(
                f"architecture record has unknown keys {', '.join(unknown)}; known keys are "
                f"{', '.join(sorted(known))}"
            )

        channels = record["channels"]
        if not isinstance(channels, dict):
            raise ConfigError("architecture 'channels' must map resolution to channel count")
        try:
            channel_table = {int(res): int(ch) for res, ch in channels.items()}
        except (TypeError, ValueError) as error:
            raise ConfigError(f"architecture 'channels' has a non-integer entry: {error}") from None

        conv_clamp = record.get("conv_clamp")
        return cls(
            resolution=_as_int(record, "resolution"),
            z_dim=_as_int(record, "z_dim"),
            w_dim=_as_int(record, "w_dim"),
            num_mapping_layers=_as_int(record, "num_mapping_layers"),
            mapping_hidden_dim=_as_int(record, "mapping_hidden_dim", default=record["w_dim"]),
            channels=channel_table,
            img_channels=_as_int(record, "img_channels", default=3),
            mapping_lr_multiplier=_as_float(
                record, "mapping_lr_multiplier", DEFAULT_MAPPING_LR_MULTIPLIER
            ),
            conv_clamp=None if conv_clamp is None else _as_float(record, "conv_clamp"),
        )


def make_architecture(
    resolution: int,
    *,
    z_dim: int = 512,
    w_dim: int = 512,
    num_mapping_layers: int = 8,
    channel_base: int = 32768,
    channel_max: int = 512,
    img_channels: int = 3,
    conv_clamp: float | None = None,
) -> Architecture:
    """Return an architecture whose channel table is NVIDIA's `min(channel_base // res, channel_max)`.

    The defaults give the channel table of rosinality's `channel_multiplier=2` and of
    stylegan2-ada-pytorch's default configuration.
    """
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise ConfigError(f"resolution must be a power of two >= 4, got {resolution!r}")
    channels = {
        2**i: min(channel_base // 2**i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)
    }
    return Architecture(
        resolution=resolution,
        z_dim=z_dim,
        w_dim=w_dim,
        num_mapping_layers=num_mapping_layers,
        mapping_hidden_dim=w_dim,
        channels=channels,
        img_channels=img_channels,
        conv_clamp=conv_clamp,
    )


def _as_int(record: dict[str, Any], key: str, default: Any = None) -> int:
    value = record.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"architecture '{key}' must be an integer, got {value!r}")
    return value


def _as_float(record: dict[str, Any], key: str, default: Any = None) -> float:
    value = record.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"architecture '{key}' must be a number, got {value!r}")
    return float(value)


def _validate(arch: Architecture) -> None:
    resolution = arch.resolution
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise ConfigError(f"architecture resolution must be a power of two >= 4, got {resolution!r}")
    for name in ("z_dim", "w_dim", "num_mapping_layers", "mapping_hidden_dim", "img_channels"):
        value = getattr(arch, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"architecture {name} must be a positive integer, got {value!r}")
    expected = set(arch.block_resolutions)
    if set(arch.channels) != expected:
        raise ConfigError(
            f"architecture channels must list resolutions {sorted(expected)}, got "
            f"{sorted(arch.channels)}"
        )
    for res, ch in arch.channels.items():
        if isinstance(ch, bool) or not isinstance(ch, int) or ch < 1:
            raise ConfigError(f"architecture channels[{res}] must be a positive integer, got {ch!r}")
    if not arch.mapping_lr_multiplier > 0:
        raise ConfigError(
            f"architecture mapping_lr_multiplier must be positive, got {arch.mapping_lr_multiplier}"
        )
    if arch.conv_clamp is not None and not arch.conv_clamp > 0:
        raise ConfigError(f"architecture conv_clamp must be positive or None, got {arch.conv_clamp}")
