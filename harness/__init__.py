"""LatentGate: find what else a classifier changes when a StyleGAN2 walk drives it to a class."""

__version__ = "0.1.0"
