"""The demo world's picture: renders and the generator's samples of the same latents, side by side.

    python -m harness.demo.figure [--generator weights/demo/generator.pt] [--out docs/demo-world.png]

Row 1 shows the renderer's image of the attributes each z is trained to draw, row 2 the trained
generator's G(z) for the same z (no truncation, noise off), so each column compares one latent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from harness.demo.manifest import WEIGHTS_DIR
from harness.demo.render import render
from harness.demo.train_generator import intended_attributes
from harness.generator import Generator, load_generator
from harness.report.images import contact_sheet, write_png


@torch.no_grad()
def renders_and_samples(generator: Generator, num_samples: int = 12, seed: int = 7) -> torch.Tensor:
    """Return `[num_samples, 2, 3, H, W]` in [-1, 1]: render and generator sample per latent."""
    z = torch.randn(num_samples, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    renders = render(intended_attributes(z), size=generator.resolution) * 2 - 1
    samples = generator(z, noise_mode="none")
    return torch.stack([renders, samples.clamp(-1, 1)], dim=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=str(WEIGHTS_DIR / "generator.pt"))
    parser.add_argument("--out", default="docs/demo-world.png")
    parser.add_argument("--num-samples", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    generator = load_generator(args.generator)
    # contact_sheet draws a row per entry of dim 1 and a column per entry of dim 0.
    pairs = renders_and_samples(generator, args.num_samples, args.seed)
    write_png(Path(args.out), contact_sheet(pairs, upscale=2))
    print(f"wrote {args.out}: row 1 renders, row 2 generator samples of the same {args.num_samples} latents")


if __name__ == "__main__":
    main()
