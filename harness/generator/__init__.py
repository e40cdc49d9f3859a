"""StyleGAN2 generators in plain PyTorch: load rosinality and NVIDIA checkpoints, convert, build.

    generator = load_generator("ffhq.pkl", device="cpu")
    ws = generator.sample_ws(num_samples=4, seed=0, truncation_psi=0.7)  # [4, num_ws, w_dim]
    images = generator.synthesis(ws)                                      # [4, 3, R, R] in [-1, 1]
"""

from harness.generator.architecture import Architecture, make_architecture
from harness.generator.conversion import convert_checkpoint
from harness.generator.loading import build_generator, load_generator
from harness.generator.network import Generator, GeneratorSource
from harness.generator.rosinality import save_rosinality_checkpoint

__all__ = [
    "Architecture",
    "Generator",
    "GeneratorSource",
    "build_generator",
    "convert_checkpoint",
    "load_generator",
    "make_architecture",
    "save_rosinality_checkpoint",
]
