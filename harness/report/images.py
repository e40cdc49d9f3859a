"""Images of a walk: an animated grid GIF and a contact sheet, from frames in [-1, 1]."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

# Each GIF frame is shown this long. GIF stores delays in hundredths of a second, so the value
# is a multiple of 10 ms.
FRAME_MS = 120
GAP_PX = 2  # white space between tiles, in output pixels


def to_uint8(images: torch.Tensor, upscale: int = 1) -> np.ndarray:
    """Convert `[N, 3, H, W]` images in [-1, 1] to `[N, H*upscale, W*upscale, 3]` uint8.

    Up-scaling is nearest-neighbour, so each generator pixel stays a visible square.
    """
    if upscale > 1:
        images = F.interpolate(images, scale_factor=upscale, mode="nearest")
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def _tile(tiles: np.ndarray, columns: int) -> np.ndarray:
    """Arrange `[K, h, w, 3]` tiles in rows of `columns`, separated by white gaps."""
    count, height, width, _ = tiles.shape
    rows = math.ceil(count / columns)
    sheet = np.full(
        (rows * height + (rows - 1) * GAP_PX, columns * width + (columns - 1) * GAP_PX, 3),
        255,
        dtype=np.uint8,
    )
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * (height + GAP_PX), column * (width + GAP_PX)
        sheet[top : top + height, left : left + width] = tiles[index]
    return sheet


def walk_gif_frames(frames: torch.Tensor, columns: int = 4, upscale: int = 2) -> np.ndarray:
    """Turn walk frames `[F, N, 3, H, W]` into GIF frames: one grid of the N samples per step.

    The walk plays forward and then back (frames 0..F-1..1), so the loop has no jump.
    """
    num_frames = frames.shape[0]
    order = list(range(num_frames)) + list(range(num_frames - 2, 0, -1))
    return np.stack([_tile(to_uint8(frames[i], upscale), columns) for i in order])


def contact_sheet(frames: torch.Tensor, upscale: int = 2) -> np.ndarray:
    """Return one image: a row per sample, a column per step along alpha."""
    num_frames, num_samples = frames.shape[:2]
    by_sample = frames.transpose(0, 1).reshape(num_samples * num_frames, *frames.shape[2:])
    return _tile(to_uint8(by_sample, upscale), num_frames)


def write_gif(path: Path, gif_frames: np.ndarray, frame_ms: int = FRAME_MS) -> None:
    """Write an animated GIF that loops forever, each frame shown `frame_ms` milliseconds.

    Each frame `[H, W, 3]` uint8 gets its own 256-colour palette from Pillow's fast octree
    quantizer. Pillow's default for RGB frames, median cut, took about 7 of the 76 seconds of
    the demo suite.
    """
    from PIL import Image

    images = [
        Image.fromarray(frame).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        for frame in gif_frames
    ]
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0
    )


def write_png(path: Path, image: np.ndarray) -> None:
    iio.imwrite(path, image, extension=".png")
