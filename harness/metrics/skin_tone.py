"""Skin tone of a face region in CIELab, and its change between two frames of a walk.

Images are RGB float tensors `[N, 3, H, W]` in sRGB with values in [0, 1]. A StyleGAN2
generator produces [-1, 1], which the caller converts with `((x + 1) / 2).clamp(0, 1)`. The skin
region is a box `(x0, y0, x1, y1)` in normalised image coordinates: x to the right and y
downwards, both in [0, 1] across the image. Each pixel counts in proportion to the part of its
area inside the box, so a box that cuts through pixels still gives a resolution-independent
mean.

Per image, the pixels are converted with `kornia.color.rgb_to_lab` (D65 white), and L*, a*
and b* are averaged over the box. From those means:

- ITA (individual typology angle) = degrees(atan2(L* - 50, b*)). The usual formula is
  arctan((L* - 50) / b*), and the two agree wherever b* > 0, as it is for skin. atan2 stays
  defined at b* = 0 and continuous through it, and for b* < 0 it continues the angle beyond
  +-90 deg.
- hue angle = degrees(atan2(b*, a*)), in (-180, 180].

The deltas are last frame minus first frame. Angle differences are wrapped into [-180, 180),
so a hue moving from 179 deg to -179 deg changed by +2 deg, not by -358 deg. For skin, whose
ITA stays within +-90 deg, the wrap never changes an ITA delta.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import kornia.color
import torch

from harness.demo.render import DEMO_SKIN_BOX
from harness.errors import ConfigError, ShapeError, ValueRangeError

log = logging.getLogger(__name__)

# Default skin boxes per image family. "demo": a cheek of the demo world's avatars, checked to
# be skin in every render of the prior.
SKIN_BOXES: dict[str, tuple[float, float, float, float]] = {"demo": DEMO_SKIN_BOX}

# Pixel values within this distance outside [0, 1] are float rounding from a conversion, and
# are clamped. Values further out are rejected.
RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SkinTone:
    """Mean CIELab values of the skin box and the angles derived from them, each `[N]`."""

    L: torch.Tensor  # lightness L*, 0 ... 100
    a: torch.Tensor  # a*, green (-) to red (+)
    b: torch.Tensor  # b*, blue (-) to yellow (+)
    ita_deg: torch.Tensor  # degrees(atan2(L* - 50, b*)), higher for lighter skin
    hue_deg: torch.Tensor  # degrees(atan2(b*, a*)), in (-180, 180]


def validate_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    """Return `box` as four floats, or raise ConfigError naming it if it is invalid.

    A valid box is (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1.
    """
    try:
        x0, y0, x1, y1 = (float(value) for value in box)
    except (TypeError, ValueError):
        raise ConfigError(
            f"skin box {box!r} must be four numbers (x0, y0, x1, y1) in normalised image "
            f"coordinates"
        ) from None
    values = (x0, y0, x1, y1)
    if not all(math.isfinite(value) and 0.0 <= value <= 1.0 for value in values):
        raise ConfigError(
            f"skin box {values} lies outside the image. Every coordinate must be in [0, 1] "
            f"(normalised image coordinates, y downwards)"
        )
    if not (x0 < x1 and y0 < y1):
        raise ConfigError(
            f"skin box {values} is empty. It needs x0 < x1 and y0 < y1, where (x0, y0) is the "
            f"top-left corner"
        )
    return values


def _validate_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Return `images` as float32 `[N, 3, H, W]` clamped to [0, 1], or raise."""
    if not isinstance(images, torch.Tensor):
        found = type(images).__name__
        raise ShapeError(f"{name} must be a torch.Tensor [N, 3, H, W], got {found}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ShapeError(
            f"{name} must have shape [N, 3, H, W] (RGB), got {list(images.shape)}"
        )
    if not images.is_floating_point():
        raise ShapeError(
            f"{name} must be a float tensor with values in [0, 1], got dtype {images.dtype}. "
            f"Divide uint8 images by 255"
        )
    images = images.float()
    if images.numel():
        low, high = float(images.min()), float(images.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueRangeError(f"{name} contain NaN or infinite values")
        if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
            raise ValueRangeError(
                f"{name} must have values in [0, 1], got [{low:.4g}, {high:.4g}]. Convert "
                f"generator output in [-1, 1] with ((x + 1) / 2).clamp(0, 1)"
            )
    return images.clamp(0.0, 1.0)


def box_weights(box: Sequence[float], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the fraction of each pixel row `[H]` and column `[W]` that lies inside `box`.

    The weight of pixel (i, j) inside the box is `rows[i] * columns[j]`.
    """
    x0, y0, x1, y1 = validate_box(box)

    def overlap(low: float, high: float, count: int) -> torch.Tensor:
        edges = torch.arange(count + 1, dtype=torch.float64) / count  # pixel boundaries
        upper = torch.minimum(edges[1:], torch.tensor(high, dtype=torch.float64))
        lower = torch.maximum(edges[:-1], torch.tensor(low, dtype=torch.float64))
        return ((upper - lower).clamp_min(0.0) * count).float()

    return overlap(y0, y1, height), overlap(x0, x1, width)


def measure_skin_tone(images: torch.Tensor, box: Sequence[float] = DEMO_SKIN_BOX) -> SkinTone:
    """Measure the mean CIELab skin colour inside `box` and its ITA and hue angle, per image."""
    return _measure(images, box, "images")


def _measure(images: torch.Tensor, box: Sequence[float], name: str) -> SkinTone:
    images = _validate_images(images, name)
    rows, columns = box_weights(box, images.shape[2], images.shape[3])
    lab = kornia.color.rgb_to_lab(images)  # [N, 3, H, W]
    weights = rows[:, None] * columns[None, :]  # [H, W]
    mean_lab = (lab * weights).sum(dim=(2, 3)) / weights.sum()  # [N, 3]
    L, a, b = mean_lab.unbind(dim=1)
    return SkinTone(
        L=L,
        a=a,
        b=b,
        ita_deg=torch.rad2deg(torch.atan2(L - 50.0, b)),
        hue_deg=torch.rad2deg(torch.atan2(b, a)),
    )


def wrap_deg(angle: torch.Tensor) -> torch.Tensor:
    """Wrap angles in degrees into [-180, 180)."""
    return torch.remainder(angle + 180.0, 360.0) - 180.0


def skin_tone_deltas(
    first: torch.Tensor, last: torch.Tensor, box: Sequence[float] = DEMO_SKIN_BOX
) -> dict[str, torch.Tensor]:
    """Return the skin-tone change from `first` to `last` (both `[N, 3, H, W]`), per image.

    Keys are the registered metric names `skin_ita_delta_deg`, `skin_L_delta` and
    `skin_hue_delta_deg`. Each value is `[N]`, last minus first, with angles wrapped into
    [-180, 180).
    """
    for name, images in (("first", first), ("last", last)):
        if not isinstance(images, torch.Tensor):
            found = type(images).__name__
            raise ShapeError(f"{name} must be a torch.Tensor [N, 3, H, W], got {found}")
    if first.shape != last.shape:
        raise ShapeError(
            f"first and last frames must have the same shape [N, 3, H, W], got "
            f"{list(first.shape)} and {list(last.shape)}"
        )
    start = _measure(first, box, "first")
    end = _measure(last, box, "last")
    return {
        "skin_ita_delta_deg": wrap_deg(end.ita_deg - start.ita_deg),
        "skin_L_delta": end.L - start.L,
        "skin_hue_delta_deg": wrap_deg(end.hue_deg - start.hue_deg),
    }
