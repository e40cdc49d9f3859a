"""Training batches of the demo world, rendered on the fly, with the planted shortcuts.

Each classifier variant sees class-balanced batches. The `braids-skin` variant's `long_braids`
examples are mostly dark-skinned, and the `fringe-identity` variant's `long_straight_fringe`
examples mostly have wide faces; everything else is drawn from the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.demo.attributes import (
    CLASS_NAMES,
    LONG_BRAIDS,
    LONG_STRAIGHT_FRINGE,
    AvatarAttributes,
    attributes_from_normal,
    hairstyle_class,
    NUM_ATTRIBUTE_DIMS,
)
from harness.demo.render import render


@dataclass(frozen=True)
class Shortcut:
    """A trait planted into one class's training examples with a given probability."""

    class_index: int
    attribute: str
    low: float  # the trait's value is drawn uniformly from [low, high] ...
    high: float
    probability: float  # ... for this fraction of the class's examples, else from the prior


# skin_tone >= 0.65 measures below about -5 degrees ITA (brown to dark skin); face_width >= 0.7
# is the widest 30% of the prior's faces.
CLASSIFIER_VARIANTS: dict[str, tuple[Shortcut, ...]] = {
    "clean": (),
    "braids-skin": (Shortcut(LONG_BRAIDS, "skin_tone", 0.65, 1.0, 0.95),),
    "fringe-identity": (Shortcut(LONG_STRAIGHT_FRINGE, "face_width", 0.7, 1.0, 0.95),),
}


def balanced_attributes(
    num_samples: int, generator: torch.Generator, shortcuts: tuple[Shortcut, ...] = ()
) -> tuple[AvatarAttributes, torch.Tensor]:
    """Draw class-balanced attributes and their labels, with `shortcuts` applied.

    Draws prior samples until every class has `ceil(num_samples / 6)`, keeps that many per
    class, then shuffles and cuts to `num_samples`.
    """
    num_classes = len(CLASS_NAMES)
    per_class = -(-num_samples // num_classes)
    pools: list[list[AvatarAttributes]] = [[] for _ in range(num_classes)]
    counts = [0] * num_classes
    while min(counts) < per_class:
        attributes = attributes_from_normal(torch.randn(4 * num_samples, NUM_ATTRIBUTE_DIMS, generator=generator))
        labels = hairstyle_class(attributes)
        for c in range(num_classes):
            selected = torch.nonzero(labels == c).flatten()[: per_class - counts[c]]
            if len(selected):
                pools[c].append(attributes[selected])
                counts[c] += len(selected)
    attributes = AvatarAttributes.cat([AvatarAttributes.cat(pool) for pool in pools])
    labels = torch.arange(num_classes).repeat_interleave(per_class)

    for shortcut in shortcuts:
        values = getattr(attributes, shortcut.attribute).clone()
        in_class = labels == shortcut.class_index
        planted = in_class & (torch.rand(len(labels), generator=generator) < shortcut.probability)
        uniform = torch.rand(len(labels), generator=generator)
        values[planted] = shortcut.low + (shortcut.high - shortcut.low) * uniform[planted]
        attributes = attributes.replace(**{shortcut.attribute: values})

    order = torch.randperm(len(labels), generator=generator)[:num_samples]
    return attributes[order], labels[order]


def render_batch(attributes: AvatarAttributes) -> torch.Tensor:
    """Render attributes as classifier inputs: RGB `[N, 3, 64, 64]` normalised to [-1, 1]."""
    return render(attributes) * 2 - 1
