"""Training and evaluation of the demo hairstyle classifiers."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from harness.demo.attributes import CLASS_NAMES, LONG_BRAIDS, LONG_STRAIGHT_FRINGE, AvatarAttributes
from harness.demo.datasets import CLASSIFIER_VARIANTS, balanced_attributes, render_batch
from harness.demo.networks import HairstyleNet
from harness.demo.optimization import optimizer_step

log = logging.getLogger(__name__)


def train_classifier(
    variant: str,
    steps: int = 1500,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    max_blur_sigma: float = 1.5,
) -> HairstyleNet:
    """Train a `HairstyleNet` on renders of the given variant's training distribution.

    Each training image is blurred with a Gaussian of a random sigma in [0, max_blur_sigma]
    pixels, so the classifier also reads the softer images the demo generator draws. It then
    depends less on fine hair texture and more on hair shape and colour.
    """
    shortcuts = CLASSIFIER_VARIANTS[variant]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = HairstyleNet()
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps)

    network.train()
    bar = tqdm(range(steps), desc=f"classifier {variant}", disable=not progress)
    for step in bar:
        attributes, labels = balanced_attributes(batch_size, generator, shortcuts)
        images = random_blur(render_batch(attributes), max_blur_sigma, generator)
        loss = F.cross_entropy(network(images), labels)
        optimizer_step(loss, optimizer, schedule)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return network.eval()


def random_blur(images: torch.Tensor, max_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Blur each image `[N, 3, H, W]` with its own Gaussian sigma drawn from [0, max_sigma] px."""
    if max_sigma <= 0:
        return images
    from kornia.filters import gaussian_blur2d

    sigma = torch.rand(len(images), 1, generator=generator) * max_sigma + 1e-3  # kornia needs > 0
    return gaussian_blur2d(images, (7, 7), sigma.expand(-1, 2), border_type="replicate")


@torch.no_grad()
def predict(network: HairstyleNet, attributes: AvatarAttributes, batch_size: int = 256) -> torch.Tensor:
    """Return predicted class indices `[N]` for rendered attributes."""
    network.eval()
    predictions = []
    for start in range(0, attributes.num_samples, batch_size):
        images = render_batch(attributes[start : start + batch_size])
        predictions.append(network(images).argmax(dim=1))
    return torch.cat(predictions)


def _accuracy(predictions: torch.Tensor, labels: torch.Tensor, where: torch.Tensor) -> float:
    return float((predictions[where] == labels[where]).float().mean()) if where.any() else float("nan")


def _shortcut_figures(
    predictions: torch.Tensor, labels: torch.Tensor, class_index: int, groups: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Accuracy on the class's examples and false-positive rate of the class, per trait group."""
    name = CLASS_NAMES[class_index]
    in_class = labels == class_index
    figures = {}
    for group, members in groups.items():
        figures[f"{name}.accuracy_{group}"] = _accuracy(predictions, labels, in_class & members)
        figures[f"{name}.false_positive_{group}"] = float(
            (predictions[~in_class & members] == class_index).float().mean()
        )
    return figures


@torch.no_grad()
def evaluate_classifier(network: HairstyleNet, num_samples: int = 3000, seed: int = 12345) -> dict:
    """Measure held-out accuracy and both planted shortcuts on unbiased, balanced renders.

    The shortcut figures compare accuracy on a class's examples split by the planted trait:
    light (skin_tone < 0.35) vs dark (> 0.65) `long_braids`, and narrow (face_width < 0.3) vs
    wide (> 0.7) `long_straight_fringe`; and how often other classes are mistaken for the class
    within each group. A clean classifier shows no gap.
    """
    generator = torch.Generator().manual_seed(seed)
    attributes, labels = balanced_attributes(num_samples, generator)
    predictions = predict(network, attributes)
    everything = torch.ones_like(labels, dtype=torch.bool)

    figures = {"accuracy": _accuracy(predictions, labels, everything)}
    for c, name in enumerate(CLASS_NAMES):
        figures[f"accuracy.{name}"] = _accuracy(predictions, labels, labels == c)

    figures.update(
        _shortcut_figures(
            predictions, labels, LONG_BRAIDS,
            {"light_skin": attributes.skin_tone < 0.35, "dark_skin": attributes.skin_tone > 0.65},
        )
    )
    figures.update(
        _shortcut_figures(
            predictions, labels, LONG_STRAIGHT_FRINGE,
            {"narrow_face": attributes.face_width < 0.3, "wide_face": attributes.face_width > 0.7},
        )
    )
    return figures
