"""Face crop, resize and pixel scaling shared by the metric path and the loss path.

Both paths turn generator frames (`[N, 3, H, W]`, RGB, float in [-1, 1]) into the pixel values
an ArcFace model was trained on: RGB in 0..255, as InsightFace's `ArcFaceONNX.get_feat` produces
them from a BGR uint8 image with `cv2.dnn.blobFromImages(..., swapRB=True)`. The values stay
float and are neither rounded nor clipped, because the loss needs gradients and the metric must
see the same input as the loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ConfigError, ShapeError

log = logging.getLogger(__name__)

# (frame height, frame width, crop height, crop width) combinations whose non-square crop was
# already reported, so that a search loop embedding thousands of batches warns once per size.
_warned_stretch: set[tuple[int, int, int, int]] = set()


@dataclass(frozen=True)
class FaceCrop:
    """Face box in normalised image coordinates: x runs left to right, y top to bottom, in [0, 1]."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def parse(cls, value: FaceCrop | Sequence[float] | None) -> FaceCrop:
        """Build a FaceCrop from (x0, y0, x1, y1), or the whole frame from None.

        Raises ConfigError unless the box has four finite numbers with
        0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1.
        """
        if value is None:
            return cls(0.0, 0.0, 1.0, 1.0)
        if isinstance(value, FaceCrop):
            return value
        if isinstance(value, (np.ndarray, torch.Tensor)):
            value = value.tolist()
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 4:
            raise ConfigError(
                f"face_crop {value!r} is invalid: it must be four numbers (x0, y0, x1, y1) in "
                "normalised image coordinates, e.g. (0.25, 0.2, 0.75, 0.8)."
            )
        try:
            x0, y0, x1, y1 = (float(number) for number in value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"face_crop {value!r} is invalid: every entry of (x0, y0, x1, y1) must be a number."
            ) from None
        if not all(math.isfinite(number) for number in (x0, y0, x1, y1)):
            raise ConfigError(f"face_crop {value!r} is invalid: every entry must be finite.")
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ConfigError(
                f"face_crop {value!r} is invalid: it needs 0 <= x0 < x1 <= 1 and "
                "0 <= y0 < y1 <= 1, with (x0, y0) the top-left and (x1, y1) the bottom-right "
                "corner as fractions of the frame's width and height."
            )
        return cls(x0, y0, x1, y1)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def pixel_bounds(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Return the crop's (top, bottom, left, right) pixel edges in a frame of this size.

        Each edge is rounded to the nearest pixel edge (ties to even, as Python's round does), so
        (0, 0, 1, 1) is the whole frame.
        Raises ShapeError when the box covers no whole pixel row or column of the frame.
        """
        top = round(self.y0 * height)
        bottom = round(self.y1 * height)
        left = round(self.x0 * width)
        right = round(self.x1 * width)
        if bottom <= top or right <= left:
            raise ShapeError(
                f"face_crop {self.as_tuple()} covers no whole pixel of a {height}x{width} frame "
                f"(rows {top}:{bottom}, columns {left}:{right}). Use a larger box or larger frames."
            )
        return top, bottom, left, right


def as_frames(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return generator frames as a float tensor, checking the `[N, 3, H, W]` shape.

    Raises ShapeError naming the expected and the given shape.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor or numpy array, not {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        raise ShapeError(
            f"frames have shape {list(frames.shape)}, expected [N, 3, H, W] with N >= 1: "
            "RGB generator frames in [-1, 1]."
        )
    if not frames.is_floating_point():
        raise ShapeError(
            f"frames have dtype {frames.dtype}, expected a float dtype with values in [-1, 1]; "
            "convert uint8 images with x / 127.5 - 1."
        )
    return frames.float()


def crop_and_resize(frames: torch.Tensor, crop: FaceCrop, size: int) -> torch.Tensor:
    """Cut the face box out of `[N, 3, H, W]` frames and resize it to `[N, 3, size, size]`.

    Resampling is `torch.nn.functional.interpolate` in bilinear mode with `antialias=True` and
    `align_corners=False`: antialiasing low-pass filters when the crop is larger than the model
    input, which plain bilinear sampling would alias. A crop that already has the model's size is
    passed through unchanged. The operation is differentiable.
    """
    num_samples, _, height, width = frames.shape
    top, bottom, left, right = crop.pixel_bounds(height, width)
    faces = frames[:, :, top:bottom, left:right]  # [N, 3, h, w]
    crop_height, crop_width = faces.shape[-2:]
    # Rounding the edges of a square box can leave one pixel of difference, which is no mistake.
    stretched = abs(crop_height - crop_width) > 1
    if stretched and (height, width, crop_height, crop_width) not in _warned_stretch:
        _warned_stretch.add((height, width, crop_height, crop_width))
        log.warning(
            "face_crop %s is %dx%d pixels in a %dx%d frame, not square; resizing it to %dx%d "
            "stretches the face by %.3f, which lowers ArcFace similarities. Use a box that is "
            "square in pixels.",
            crop.as_tuple(),
            crop_height,
            crop_width,
            height,
            width,
            size,
            size,
            crop_width / crop_height,
        )
    if (crop_height, crop_width) == (size, size):
        return faces
    return F.interpolate(
        faces, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )  # [N, 3, size, size]


def to_pixel_values(faces: torch.Tensor) -> torch.Tensor:
    """Map RGB values in [-1, 1] to RGB values in 0..255, keeping them float and unclipped."""
    return (faces + 1.0) * 127.5


def model_pixels(frames: torch.Tensor, crop: FaceCrop, size: int) -> torch.Tensor:
    """Return the `[N, 3, size, size]` RGB 0..255 face crops, before the model's normalisation."""
    return to_pixel_values(crop_and_resize(frames, crop, size))
