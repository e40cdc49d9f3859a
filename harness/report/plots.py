"""Curves of a walk's measurements against alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.metrics.walk import WalkCurves


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over samples and the 2.5 / 97.5 percentiles of the samples, per frame."""
    return values.mean(axis=0), np.percentile(values, 2.5, axis=0), np.percentile(values, 97.5, axis=0)


def plot_curves(curves: WalkCurves, title: str, path: Path) -> None:
    """Plot target probability, identity similarity and skin ITA change against alpha (PNG).

    Lines are means over samples; shaded bands span the middle 95% of the samples.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("target probability", curves.target_prob, (0.0, 1.0)),
        ("identity cosine similarity to alpha 0", curves.identity_cos_sim, (None, 1.0)),
        ("skin ITA change (degrees)", curves.skin_ita_change(), None),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2), constrained_layout=True)
    for axis, (label, values, limits) in zip(axes, panels):
        mean, low, high = _band(values)
        axis.plot(curves.alphas, mean, color="tab:blue")
        axis.fill_between(curves.alphas, low, high, color="tab:blue", alpha=0.2, linewidth=0)
        axis.set_xlabel("alpha")
        axis.set_title(label, fontsize=10)
        if limits is not None:
            axis.set_ylim(*limits)
        axis.grid(alpha=0.3)
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=90)
    plt.close(figure)
