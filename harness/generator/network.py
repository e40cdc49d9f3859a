"""The StyleGAN2 generator as one PyTorch module with LatentGate's own parameter names.

Mapping network: z -> normalise -> `num_mapping_layers` fully connected layers with leaky ReLU
-> w, broadcast to `num_ws` slots (W+). Synthesis network ('skip' architecture): a learned
4x4 constant, then per resolution a 2x up-sampling modulated conv (from 8 px on) and a
modulated conv, each followed by noise, bias and leaky ReLU. Every block adds its ToRGB output
to the up-sampled image of the block before.

Parameter layout (all weights are stored without their equalised-learning-rate gain, as both
reference implementations store them):

    mapping.layers.{i}.weight [out, in], .bias [out]      gain lr_multiplier / sqrt(in)
    mapping.w_avg [w_dim]                                  buffer
    synthesis.resample_filter [4, 4]                       buffer, sums to 1
    synthesis.const [C4, 4, 4]
    synthesis.blocks.{b}.conv0 (absent in block 0) and .conv1:
        affine.weight [Cin, w_dim], affine.bias [Cin]      gain 1 / sqrt(w_dim)
        weight [Cout, Cin, 3, 3]                           gain 1 / sqrt(Cin * 9)
        bias [Cout], noise_strength [], noise_const [R, R] (buffer)
    synthesis.blocks.{b}.to_rgb: affine.*, weight [img_channels, Cout, 1, 1], bias [img_channels]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError, ShapeError
from harness.generator import ops
from harness.generator.architecture import Architecture

LEAKY_RELU_SLOPE = 0.2
ACTIVATION_GAIN = math.sqrt(2.0)  # keeps the activations' second moment through leaky ReLU
NOISE_MODES = ("const", "random", "none")
# Seed of the noise maps drawn when a rosinality checkpoint lacks its `noises.noise_*` buffers.
FALLBACK_NOISE_SEED = 0


class EqualizedLinear(nn.Module):
    """Fully connected layer whose weight and bias are scaled at run time (equalised learning rate)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addmm(self.bias * self.bias_gain, x, self.weight.t() * self.weight_gain)
        if self.activation:
            x = F.leaky_relu(x, LEAKY_RELU_SLOPE) * ACTIVATION_GAIN
        return x


def check_truncation_psi(truncation_psi: float, name: str = "truncation_psi") -> None:
    """Raise ConfigError unless `truncation_psi` is a finite number; NaN or inf fill ws with NaN."""
    try:
        value = float(truncation_psi)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{name} must be a finite number, got {truncation_psi!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}; 1 means no truncation")


class MappingNetwork(nn.Module):
    """Map z [N, z_dim] to ws [N, num_ws, w_dim]; w_avg, the centre of truncation, lives here."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.z_dim = arch.z_dim
        self.w_dim = arch.w_dim
        self.num_ws = arch.num_ws
        features = arch.mapping_features
        self.layers = nn.ModuleList(
            EqualizedLinear(
                features[i],
                features[i + 1],
                lr_multiplier=arch.mapping_lr_multiplier,
                activation=True,
            )
            for i in range(arch.num_mapping_layers)
        )
        self.register_buffer("w_avg", torch.zeros(arch.w_dim))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Return ws [N, num_ws, w_dim], truncated towards w_avg by `truncation_psi`.

        `truncation_cutoff` truncates only the first that many slots (NVIDIA's option); None
        truncates all of them, as rosinality always does.
        """
        check_truncation_psi(truncation_psi)
        w = self.map_to_w(z)
        # A copy per slot rather than an expanded view, so that callers may edit ws in place.
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            if isinstance(cutoff, bool) or not isinstance(cutoff, int) or not 0 <= cutoff:
                raise ConfigError(
                    f"truncation_cutoff must be None or an integer >= 0, got {truncation_cutoff!r}"
                )
            truncated = torch.lerp(self.w_avg, ws[:, :cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, cutoff:]], dim=1)
        return ws

    def map_to_w(self, z: torch.Tensor) -> torch.Tensor:
        """Return w [N, w_dim] for z [N, z_dim], without broadcast or truncation."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            shape = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ShapeError(f"z has shape {shape} but this generator takes [N, {self.z_dim}]")
        x = ops.normalize_2nd_moment(z.to(device=self.w_avg.device, dtype=self.w_avg.dtype))
        for layer in self.layers:
            x = layer(x)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally up-sampling 2x), then noise, bias and leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        *,
        up: bool,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        resample_filter: torch.Tensor,
        noise_mode: str,
        implementation: str,
    ) -> torch.Tensor:
        styles = self.affine(w)  # [N, Cin]
        weight = self.weight * self.weight_gain
        y, dcoefs = ops.modulated_conv2d(
            x,
            weight,
            styles,
            demodulate=True,
            up=self.up,
            resample_filter=resample_filter,
            implementation=implementation,
        )

        # leaky_relu(a) * g == leaky_relu(a * g) for g > 0, so the activation gain is folded into
        # the demodulation scale and the additive terms: one fused multiply-add, then an
        # in-place activation over the large tensor.
        batch_size, out_channels = y.shape[0], y.shape[1]
        shift = (self.bias * ACTIVATION_GAIN).reshape(1, out_channels, 1, 1)
        if noise_mode == "const":
            shift = shift + self.noise_const * (self.noise_strength * ACTIVATION_GAIN)
            # An addend in y's memory format keeps the result in it (channels-last stays
            # channels-last); a mismatched one makes addcmul write a slower, strided result.
            shift = shift.contiguous(memory_format=_memory_format(y))
        if dcoefs is None:
            out = torch.add(shift, y, alpha=ACTIVATION_GAIN)
        else:
            scale = (dcoefs * ACTIVATION_GAIN).reshape(batch_size, out_channels, 1, 1)
            out = torch.addcmul(shift, y, scale)
        if noise_mode == "random":
            noise = torch.randn(
                batch_size, 1, self.resolution, self.resolution, device=y.device, dtype=y.dtype
            )
            out = out.add_(noise * (self.noise_strength * ACTIVATION_GAIN))
        out = F.leaky_relu_(out, LEAKY_RELU_SLOPE)
        if self.conv_clamp is not None:
            # Not in place: leaky ReLU's backward reads its output, which must stay unchanged.
            out = out.clamp(-self.conv_clamp, self.conv_clamp)
        return out


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation, plus bias."""

    def __init__(
        self, in_channels: int, img_channels: int, w_dim: int, *, conv_clamp: float | None
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        y = ops.modulated_to_rgb(x, self.weight * self.weight_gain, styles)
        y = y + self.bias.reshape(1, -1, 1, 1)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y


class SynthesisBlock(nn.Module):
    """One resolution: [up-sampling conv0], conv1, ToRGB."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv0 = None
        if in_channels:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, up=False, conv_clamp=conv_clamp
        )
        self.to_rgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 2 if in_channels else 1


class SynthesisNetwork(nn.Module):
    """Map ws [N, num_ws, w_dim] to images [N, img_channels, R, R]."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.resolution = arch.resolution
        self.w_dim = arch.w_dim
        self.num_ws = arch.num_ws
        # "shared" or "grouped", see ops.modulated_conv2d. Both are tested to agree.
        self.modconv_implementation = "shared"
        self.register_buffer("resample_filter", ops.normalized_filter(torch.tensor([1.0, 3, 3, 1])))
        self.const = nn.Parameter(torch.randn(arch.channels[4], 4, 4))
        blocks = []
        for res in arch.block_resolutions:
            in_channels = arch.channels[res // 2] if res > 4 else 0
            blocks.append(
                SynthesisBlock(
                    in_channels,
                    arch.channels[res],
                    arch.w_dim,
                    res,
                    arch.img_channels,
                    arch.conv_clamp,
                )
            )
        self.blocks = nn.ModuleList(blocks)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        ws = self.check_ws(ws)
        if noise_mode not in NOISE_MODES:
            raise ConfigError(
                f"noise_mode {noise_mode!r} is not one of {', '.join(NOISE_MODES)}"
            )
        implementation = self.modconv_implementation
        if implementation not in ops.MODCONV_IMPLEMENTATIONS:
            raise ConfigError(
                f"modconv_implementation {implementation!r} is not one of "
                f"{', '.join(ops.MODCONV_IMPLEMENTATIONS)}"
            )

        batch_size = ws.shape[0]
        # Channels-last activations made a 3x3 conv of 128 channels at 64 px about 1.4x faster
        # on 2 CPU threads. The grouped implementation folds samples into channels instead.
        memory_format = torch.channels_last if implementation == "shared" else torch.contiguous_format
        x = self.const.unsqueeze(0).expand(batch_size, -1, -1, -1)
        x = x.contiguous(memory_format=memory_format)

        # unbind's backward stacks the slot gradients once; indexing ws[:, i] per layer would
        # allocate a zero tensor of the size of ws for every slot.
        w_slots = ws.unbind(dim=1)
        img = None
        w_index = 0
        for block in self.blocks:
            if block.conv0 is not None:
                x = block.conv0(x, w_slots[w_index], self.resample_filter, noise_mode, implementation)
                w_index += 1
            x = block.conv1(x, w_slots[w_index], self.resample_filter, noise_mode, implementation)
            w_index += 1
            # The ToRGB layer shares its w slot with the next block's first conv.
            y = block.to_rgb(x, w_slots[w_index])
            img = y if img is None else ops.upsample_2x(img, self.resample_filter) + y
        assert w_index == self.num_ws - 1
        return img.contiguous()

    def check_ws(self, ws: torch.Tensor) -> torch.Tensor:
        """Return ws as [N, num_ws, w_dim] in this network's dtype and on its device.

        A single w [N, w_dim] is broadcast to every slot. Anything else raises ShapeError naming
        both shapes.
        """
        expected = f"[N, {self.num_ws}, {self.w_dim}] or [N, {self.w_dim}]"
        if not isinstance(ws, torch.Tensor):
            raise ShapeError(f"ws must be a torch.Tensor of shape {expected}, got {type(ws).__name__}")
        if ws.ndim == 2 and ws.shape[1] == self.w_dim:
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        elif ws.ndim != 3 or ws.shape[2] != self.w_dim:
            raise ShapeError(
                f"ws has shape {list(ws.shape)} but this generator takes {expected}"
            )
        elif ws.shape[1] != self.num_ws:
            raise ShapeError(
                f"ws has {ws.shape[1]} layers (shape {list(ws.shape)}) but this "
                f"{self.resolution} px generator takes {self.num_ws} (shape {expected}); "
                "W+ codes are specific to one generator resolution"
            )
        return ws.to(device=self.const.device, dtype=self.const.dtype)


# Sample count and seed used when a checkpoint has no average w (rosinality training checkpoints).
W_AVG_ESTIMATE_SAMPLES = 10_000
W_AVG_ESTIMATE_SEED = 0


@dataclass
class GeneratorSource:
    """Provenance of a generator's weights, for logs and run records."""

    format: str  # "rosinality", "rosinality-train", "nvidia-pickle", "nvidia-state", "safetensors", "initialised"
    path: str | None
    sha256: str | None  # of the file's bytes
    architecture: dict[str, Any]
    w_avg_estimated: bool = False  # w_avg was estimated from mapped samples, not read from the file
    noise_generated: bool = False  # noise maps were drawn from a fixed seed, not read from the file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Generator(nn.Module):
    """StyleGAN2 generator: `mapping(z)` -> ws, `synthesis(ws)` -> images in [-1, 1].

    Trainable like any module. `load_generator` returns one with gradients disabled for its
    parameters (call `requires_grad_(True)` to fine-tune it), in eval mode. It computes in the
    dtype of its parameters: float32 as loaded, float64 after `.double()`.
    """

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.architecture = arch
        self.z_dim = arch.z_dim
        self.w_dim = arch.w_dim
        self.num_ws = arch.num_ws
        self.resolution = arch.resolution
        self.img_channels = arch.img_channels
        self.mapping = MappingNetwork(arch)
        self.synthesis = SynthesisNetwork(arch)
        self.source = GeneratorSource(
            format="initialised", path=None, sha256=None, architecture=arch.to_dict()
        )

    @property
    def w_avg(self) -> torch.Tensor:
        """Average w [w_dim], the centre of truncation."""
        return self.mapping.w_avg

    @property
    def device(self) -> torch.device:
        return self.synthesis.const.device

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

    def sample_z(self, num_samples: int, seed: int) -> torch.Tensor:
        """Return z [num_samples, z_dim] drawn from N(0, 1) with a CPU generator seeded by `seed`.

        Drawing on the CPU makes the same seed give the same z on every device.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        rng = torch.Generator().manual_seed(seed)
        return torch.randn(num_samples, self.z_dim, generator=rng).to(self.device)

    @torch.no_grad()
    def sample_ws(
        self,
        num_samples: int,
        seed: int,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Return ws [num_samples, num_ws, w_dim] for z drawn with `seed`, detached from the graph."""
        z = self.sample_z(num_samples, seed)
        return self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    @torch.no_grad()
    def estimate_w_avg(
        self,
        num_samples: int = W_AVG_ESTIMATE_SAMPLES,
        seed: int = W_AVG_ESTIMATE_SEED,
        batch_size: int = 2_000,
    ) -> torch.Tensor:
        """Set w_avg to the mean of w over `num_samples` z drawn with `seed`, and return it."""
        z = self.sample_z(num_samples, seed)
        total = torch.zeros(self.w_dim, dtype=torch.float64, device=self.device)
        for start in range(0, num_samples, batch_size):
            total += self.mapping.map_to_w(z[start : start + batch_size]).sum(dim=0).double()
        self.mapping.w_avg.copy_((total / num_samples).float())
        return self.mapping.w_avg
