"""Cosine similarity of identity embeddings, for numpy (the metric) and torch (the loss)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ShapeError

# Lower bound for each vector norm, as in torch.nn.functional.cosine_similarity, so that a zero
# embedding gives similarity 0 instead of NaN.
_EPS = 1e-8


def cosine_similarity(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor
) -> np.ndarray | torch.Tensor:
    """Compute the cosine similarity of embeddings along the last axis.

    Takes raw, un-normalised embeddings such as ArcFace outputs `[N, D]` or `[D]`. Leading axes
    broadcast, so `[1, D]` against `[N, D]` compares one reference with N embeddings. Numpy
    inputs give a float64 numpy result. Torch inputs give a torch result that keeps gradients.
    Raises ShapeError when the embedding sizes differ and TypeError when the two inputs mix
    numpy and torch.
    """
    if a.shape[-1] != b.shape[-1]:
        raise ShapeError(
            f"cannot compare embeddings of shapes {list(a.shape)} and {list(b.shape)}: the last "
            "axis (embedding size) must match; embed both with the same identity model."
        )
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return F.cosine_similarity(a, b, dim=-1, eps=_EPS)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        a64 = a.astype(np.float64)
        b64 = b.astype(np.float64)
        norm_a = np.maximum(np.linalg.norm(a64, axis=-1), _EPS)
        norm_b = np.maximum(np.linalg.norm(b64, axis=-1), _EPS)
        return np.sum(a64 * b64, axis=-1) / (norm_a * norm_b)
    raise TypeError(
        "cosine_similarity needs two numpy arrays or two torch tensors, got "
        f"{type(a).__name__} and {type(b).__name__}"
    )
