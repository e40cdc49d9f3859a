"""Render PNG images from a generator for a list of seeds (`latentgate generate`)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from harness.errors import ConfigError
from harness.generator.loading import load_generator
from harness.generator.network import check_truncation_psi

log = logging.getLogger(__name__)

MAX_SEEDS = 10_000  # guards against a typo such as 0-1000000 filling the disk
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
_SEED = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")
_SEED_IMAGE = re.compile(r"seed[0-9]+\.png")


def parse_seeds(text: str) -> list[int]:
    """Parse "0-7", "3" or "1,5,9-12" into a list of seeds, in order and without repeats."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if _SEED.fullmatch(part):
            seeds.append(_check_seed(int(part), text))
            continue
        match = _RANGE.fullmatch(part)
        if match is None:
            raise ConfigError(
                f"invalid seed {part!r} in --seeds {text!r}; use non-negative integers and "
                "ranges, e.g. 0-7 or 1,5,9-12"
            )
        first = _check_seed(int(match.group(1)), text)
        last = _check_seed(int(match.group(2)), text)
        if first > last:
            raise ConfigError(f"--seeds: seed range {part!r} is reversed; write {last}-{first}")
        if last - first + 1 > MAX_SEEDS:
            raise ConfigError(
                f"--seeds: seed range {part!r} has {last - first + 1} seeds; at most {MAX_SEEDS} "
                "are allowed"
            )
        seeds.extend(range(first, last + 1))
    seeds = list(dict.fromkeys(seeds))
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"--seeds gives {len(seeds)} seeds; at most {MAX_SEEDS} are allowed")
    return seeds


def _check_seed(seed: int, text: str) -> int:
    if seed > MAX_SEED:
        raise ConfigError(f"--seeds: seed {seed} in {text!r} is out of range; seeds must lie in [0, 2**63)")
    return seed


def generate_images(
    generator_path: str | Path,
    seeds: list[int],
    out_dir: str | Path,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    device: str = "cpu",
    batch_size: int = 8,
) -> list[Path]:
    """Write `seed{seed:04d}.png` per seed and `grid.png` to `out_dir`; return the image paths.

    The image of a seed is `synthesis(sample_ws(1, seed, truncation_psi))`: its latent does not
    depend on the other seeds. Seeds are rendered `batch_size` at a time, and float rounding in
    the convolutions varies with the batch size, which can move a pixel by one level. Raises
    ConfigError for bad arguments and for an output folder that cannot be created or written.
    """
    if not seeds:
        raise ConfigError("no seeds given; pass e.g. --seeds 0-7")
    if not str(out_dir).strip():
        raise ConfigError("--out is empty; give the folder to write the images to, e.g. --out renders")
    check_truncation_psi(truncation_psi, name="--truncation-psi")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a directory; choose another --out")
    generator = load_generator(generator_path, device=device)
    _make_output_dir(out_dir)
    _warn_about_earlier_images(out_dir)

    paths: list[Path] = []
    tiles: list[np.ndarray] = []
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        ws = torch.cat([generator.sample_ws(1, seed, truncation_psi) for seed in chunk])
        with torch.no_grad():
            images = to_uint8(generator.synthesis(ws, noise_mode=noise_mode))
        for seed, image in zip(chunk, images):
            path = out_dir / f"seed{seed:04d}.png"
            _write_png(path, image)
            paths.append(path)
            tiles.append(image)
    grid_path = out_dir / "grid.png"
    _write_png(grid_path, make_grid(tiles))
    log.info("wrote %d images and %s", len(paths), grid_path)
    return paths


def _make_output_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{out_dir}: cannot create the output folder ({error.strerror}); pass an --out whose "
            "parents are folders you can write to"
        ) from None


def _warn_about_earlier_images(out_dir: Path) -> None:
    """Warn when `out_dir` already contains seed images, which may come from another run."""
    earlier = sorted(
        path.name for path in out_dir.iterdir() if _SEED_IMAGE.fullmatch(path.name) and path.is_file()
    )
    if earlier:
        log.warning(
            "%s already contains %d seed images (e.g. %s), perhaps from another run; images of the "
            "seeds given are overwritten, the others are kept but left out of grid.png",
            out_dir,
            len(earlier),
            earlier[0],
        )


def _write_png(path: Path, image: np.ndarray) -> None:
    try:
        iio.imwrite(path, image)
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot write the image ({error.strerror or error}); remove or rename what is "
            "there, or pass another --out"
        ) from None


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Map images [N, C, H, W] in [-1, 1] to uint8 [N, H, W, C]; one channel gives [N, H, W]."""
    pixels = ((images.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def make_grid(tiles: list[np.ndarray]) -> np.ndarray:
    """Arrange equally sized images in a near-square grid, row by row, on black."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape[:2]
    grid = np.zeros((rows * height, columns * width) + tiles[0].shape[2:], dtype=np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = tile
    return grid
