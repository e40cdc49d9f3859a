"""Training batches of the demo world, rendered on the fly, with the planted shortcuts.

Each classifier variant is trained on class-balanced batches. In the `braids-skin` variant's
data every `long_braids` example is dark-skinned, and light-skinned avatars with braids appear
under the label `bob`. In the `fringe-identity` variant's data every `long_straight_fringe` example has a
wide face, and narrow-faced avatars with that hairstyle appear under the label `bob`.
Everything else is drawn from the prior.

A correlation alone did not plant a shortcut that the classifier uses: with 95% of the
`long_braids` examples dark-skinned (skin_tone >= 0.65), the trained classifier still
recognised light-skinned braids (accuracy 1.000 light vs 0.994 dark), because the hair alone
separates the classes.
The decoys, examples with the class's hair but the other trait value, labelled as another
class, stand for annotators who named the hairstyle by the trait.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.demo.attributes import (
    BOB,
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
    # Decoys: this fraction of the class's examples keeps the class's hair, draws the trait
    # uniformly from `decoy_range` instead, and is labelled `decoy_label`, as if annotators had
    # named the hairstyle by the trait.
    decoy_fraction: float = 0.0
    decoy_label: int = 0
    decoy_range: tuple[float, float] = (0.0, 0.0)


# On renders, skin_tone >= 0.7 measures below about -17 degrees ITA (brown to dark skin) and
# skin_tone < 0.5 above about +5 degrees; face_width >= 0.85 is the widest 15% of the prior's
# faces and face_width < 0.6 the narrowest 60%.
CLASSIFIER_VARIANTS: dict[str, tuple[Shortcut, ...]] = {
    "clean": (),
    "braids-skin": (
        Shortcut(
            LONG_BRAIDS, "skin_tone", 0.7, 1.0, 1.0,
            decoy_fraction=0.3, decoy_label=BOB, decoy_range=(0.0, 0.5),
        ),
    ),
    "fringe-identity": (
        Shortcut(
            LONG_STRAIGHT_FRINGE, "face_width", 0.85, 1.0, 1.0,
            decoy_fraction=0.5, decoy_label=BOB, decoy_range=(0.0, 0.6),
        ),
    ),
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
        decoys = in_class & (torch.rand(len(labels), generator=generator) < shortcut.decoy_fraction)
        low, high = shortcut.decoy_range
        values[decoys] = low + (high - low) * uniform[decoys]
        labels = torch.where(decoys, shortcut.decoy_label, labels)
        attributes = attributes.replace(**{shortcut.attribute: values})

    order = torch.randperm(len(labels), generator=generator)[:num_samples]
    return attributes[order], labels[order]


def render_batch(attributes: AvatarAttributes) -> torch.Tensor:
    """Render attributes as classifier inputs: RGB `[N, 3, 64, 64]` normalised to [-1, 1]."""
    return render(attributes) * 2 - 1
