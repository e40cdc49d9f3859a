"""Functional building blocks of StyleGAN2 synthesis in plain PyTorch ops.

Both reference implementations (rosinality/stylegan2-pytorch and NVlabs/stylegan2-ada-pytorch)
apply FIR filters as true convolutions. Their resampling filter sums to 1 and is multiplied by
4, the up-sampling factor squared, after zero insertion. Demodulation adds 1e-8 under the
square root.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEMODULATION_EPS = 1e-8
UPSAMPLE_GAIN = 4.0  # factor**2 for 2x up-sampling: keeps the mean after zero insertion
MODCONV_IMPLEMENTATIONS = ("shared", "grouped")


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row of `x` [N, D] to unit root mean square (rosinality's PixelNorm)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def normalized_filter(kernel: torch.Tensor) -> torch.Tensor:
    """Return a 2D FIR filter divided by its sum; a 1D kernel becomes its outer product."""
    kernel = kernel.to(torch.float32)
    if kernel.ndim == 1:
        kernel = kernel[:, None] * kernel[None, :]
    return kernel / kernel.sum()


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Return 1 / ||weight * style|| per sample and output channel, shape [N, Cout].

    `weight` is [Cout, Cin, k, k] with its gain applied and `styles` is [N, Cin]. The sum over
    input channels and taps of (w * s)^2 equals styles^2 @ (sum over taps of w^2)^T, so no
    per-sample weight tensor is materialised.
    """
    weight_energy = weight.square().sum(dim=(2, 3))  # [Cout, Cin]
    return (styles.square() @ weight_energy.t() + DEMODULATION_EPS).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool,
    up: bool,
    resample_filter: torch.Tensor | None,
    implementation: str = "shared",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Convolve each sample of `x` with `weight` modulated by that sample's styles.

    Shapes: `x` [N, Cin, H, W], `weight` [Cout, Cin, k, k] (gain applied), `styles` [N, Cin].
    With `up`, the output is [N, Cout, 2H, 2W]: a stride-2 transposed convolution followed by
    the FIR filter, as both reference implementations compute it.

    Returns `(y, dcoefs)`. The "shared" implementation convolves the style-scaled input with the
    shared weight and leaves demodulation to the caller, who multiplies `y` by `dcoefs`
    [N, Cout] (so that it fuses with bias, noise and activation). The "grouped" implementation
    builds per-sample weights, demodulates them and runs one grouped convolution; it returns
    `dcoefs=None`. Both compute the same function: NVIDIA calls them the non-fused and fused
    paths. On a 2-thread CPU the shared one is faster, forward and backward (see
    benchmarks/generator.py).
    """
    batch_size, in_channels = x.shape[0], x.shape[1]
    out_channels, _, kernel_size, _ = weight.shape
    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None

    if implementation == "shared":
        x = x * styles.reshape(batch_size, in_channels, 1, 1)
        if up:
            y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            y = blur_after_transposed_conv(y, resample_filter)
        else:
            y = F.conv2d(x, weight, padding=kernel_size // 2)
        return y, dcoefs

    if implementation != "grouped":
        raise ValueError(f"unknown modulated conv implementation {implementation!r}")
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, in_channels, 1, 1)
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch_size, out_channels, 1, 1, 1)
    height, width = x.shape[2], x.shape[3]
    x = x.reshape(1, batch_size * in_channels, height, width)
    if up:
        # A transposed convolution's weight is [in, out, k, k] per group.
        w = w.transpose(1, 2).reshape(batch_size * in_channels, out_channels, kernel_size, kernel_size)
        y = F.conv_transpose2d(x, w, stride=2, groups=batch_size)
        y = y.reshape(batch_size, out_channels, y.shape[2], y.shape[3])
        y = blur_after_transposed_conv(y, resample_filter)
    else:
        w = w.reshape(batch_size * out_channels, in_channels, kernel_size, kernel_size)
        y = F.conv2d(x, w, padding=kernel_size // 2, groups=batch_size)
        y = y.reshape(batch_size, out_channels, y.shape[2], y.shape[3])
    return y, None


def blur_after_transposed_conv(y: torch.Tensor, resample_filter: torch.Tensor) -> torch.Tensor:
    """Apply the 4x4 FIR filter to a 3x3 stride-2 transposed conv output, [2H+1] -> [2H].

    Pads 1 pixel on each side and convolves with the filter times 4. rosinality's
    `Blur(pad=(1, 1), upsample_factor=2)` and NVIDIA's `conv2d_resample(up=2)` both reduce to
    this for a 3x3 kernel and a 4x4 filter.
    """
    channels = y.shape[1]
    kernel = (resample_filter.flip(0, 1) * UPSAMPLE_GAIN).to(y.dtype)
    kernel = kernel.reshape(1, 1, *kernel.shape).expand(channels, 1, -1, -1)
    return F.conv2d(y, kernel, padding=1, groups=channels)


def upsample_2x(x: torch.Tensor, resample_filter: torch.Tensor) -> torch.Tensor:
    """Up-sample by 2 with zero insertion and the FIR filter times 4, [H] -> [2H].

    Zero insertion followed by a true convolution with a 4-tap filter, padded (2, 1), equals a
    stride-2 transposed convolution with the unflipped filter and padding 1.
    """
    channels = x.shape[1]
    kernel = (resample_filter * UPSAMPLE_GAIN).to(x.dtype)
    kernel = kernel.reshape(1, 1, *kernel.shape).expand(channels, 1, -1, -1)
    return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=channels)


def modulated_to_rgb(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Apply a 1x1 modulated convolution without demodulation, [N, Cin, H, W] -> [N, Cout, H, W].

    A 1x1 convolution with per-sample weights is a batched matrix product over pixels, so the
    large activation tensor is read once and never scaled. For channels-last `x` the pixel view
    [N, H*W, Cin] needs no copy, and its gradient comes back channels-last too.
    """
    batch_size, in_channels, height, width = x.shape
    per_sample = weight.reshape(1, -1, in_channels) * styles.unsqueeze(1)  # [N, Cout, Cin]
    pixels = x.permute(0, 2, 3, 1).reshape(batch_size, height * width, in_channels)
    y = pixels @ per_sample.transpose(1, 2)  # [N, H*W, Cout]
    return y.reshape(batch_size, height, width, -1).permute(0, 3, 1, 2)
