"""Measurements along a walk `w + alpha * d`, per sample and per frame."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from harness.metrics.bootstrap import Measurement, bootstrap_mean


@dataclass
class WalkCurves:
    """Per-sample curves over the frames of one class's walk; every array is `[N, F]`."""

    alphas: np.ndarray  # [F]
    target_prob: np.ndarray
    identity_cos_sim: np.ndarray  # similarity of each frame to frame 0
    skin_ita_deg: np.ndarray
    skin_L: np.ndarray
    skin_hue_deg: np.ndarray

    def per_sample_metrics(self) -> dict[str, np.ndarray]:
        """Return each registry metric per sample `[N]`: last frame against the first."""
        return {
            "target_prob_gain": self.target_prob[:, -1] - self.target_prob[:, 0],
            "identity_cos_sim": self.identity_cos_sim[:, -1],
            "skin_ita_delta_deg": self.skin_ita_change()[:, -1],
            "skin_L_delta": self.skin_L[:, -1] - self.skin_L[:, 0],
            "skin_hue_delta_deg": _wrap_deg(self.skin_hue_deg[:, -1] - self.skin_hue_deg[:, 0]),
        }

    def skin_ita_change(self) -> np.ndarray:
        """Return the ITA change of every frame from frame 0 `[N, F]`, wrapped into [-180, 180).

        ITA is an angle from atan2, so a change is taken the shorter way round; for skin, whose
        ITA stays within +-90 degrees, the wrap changes nothing.
        """
        return _wrap_deg(self.skin_ita_deg - self.skin_ita_deg[:, :1])

    def summarize(
        self, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
    ) -> dict[str, Measurement]:
        """Return the mean and bootstrap interval over samples of every metric."""
        return {
            name: bootstrap_mean(values, num_resamples, confidence, seed)
            for name, values in self.per_sample_metrics().items()
        }


def _wrap_deg(angle: np.ndarray) -> np.ndarray:
    return (angle + 180.0) % 360.0 - 180.0


@torch.no_grad()
def render_walk(
    synthesis: Callable[[torch.Tensor], torch.Tensor],
    ws: torch.Tensor,
    direction: torch.Tensor,
    alphas: np.ndarray,
    batch_size: int = 64,
) -> torch.Tensor:
    """Render frames `[F, N, 3, H, W]` (CPU, float, [-1, 1]) of `ws + alpha * direction`."""
    num_samples = ws.shape[0]
    steps = torch.as_tensor(alphas, dtype=ws.dtype, device=ws.device)
    walk = ws.unsqueeze(0) + steps.view(-1, 1, 1, 1) * direction.to(ws).unsqueeze(0)
    flat = walk.reshape(-1, *ws.shape[1:])  # [F * N, num_ws, w_dim]
    images = torch.cat([synthesis(flat[i : i + batch_size]) for i in range(0, len(flat), batch_size)])
    return images.view(len(alphas), num_samples, *images.shape[1:]).cpu()


@torch.no_grad()
def measure_walk(
    frames: torch.Tensor,
    alphas: np.ndarray,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    class_index: int,
    embed: Callable[[torch.Tensor], np.ndarray],
    skin_tone: Callable[[torch.Tensor], dict[str, torch.Tensor]],
) -> WalkCurves:
    """Measure every frame of a walk.

    `frames` is `[F, N, 3, H, W]` in [-1, 1]. `embed` returns identity embeddings `[M, D]` for
    frames `[M, 3, H, W]` (the ONNX metric path); `skin_tone` returns per-image tensors
    `ita_deg`, `L` and `hue_deg` for frames in [-1, 1].
    """
    num_frames, num_samples = frames.shape[:2]
    flat = frames.reshape(num_frames * num_samples, *frames.shape[2:])

    def per_frame(values) -> np.ndarray:  # [F * N] -> [N, F]
        return np.asarray(values, dtype=np.float64).reshape(num_frames, num_samples).T

    probabilities = torch.softmax(classifier(flat).float(), dim=1)[:, class_index]

    embeddings = np.asarray(embed(flat), dtype=np.float64)
    embeddings = embeddings.reshape(num_frames, num_samples, -1)
    embeddings /= np.linalg.norm(embeddings, axis=-1, keepdims=True)
    similarity = np.einsum("fnd,nd->nf", embeddings, embeddings[0])

    skin = skin_tone(flat)
    return WalkCurves(
        alphas=np.asarray(alphas, dtype=np.float64),
        target_prob=per_frame(probabilities.cpu().numpy()),
        identity_cos_sim=similarity,
        skin_ita_deg=per_frame(skin["ita_deg"].cpu().numpy()),
        skin_L=per_frame(skin["L"].cpu().numpy()),
        skin_hue_deg=per_frame(skin["hue_deg"].cpu().numpy()),
    )
