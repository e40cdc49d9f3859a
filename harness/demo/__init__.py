"""The demo world: procedural cartoon avatars with known attributes and hairstyle classes.

`sample_attributes(num_samples, seed)` draws attributes from the prior, `render(attributes)`
turns them into 64x64 RGB images in [0, 1], and `hairstyle_class(attributes)` labels them with
one of `CLASS_NAMES`. The generator, identity model and classifiers of the demo are trained
on these renders.
"""

from harness.demo.attributes import (
    AFRO,
    ATTRIBUTE_NAMES,
    BOB,
    CLASS_NAMES,
    CURLY_BOB_FRINGE,
    HAIR_FIELDS,
    IDENTITY_FIELDS,
    LONG_BRAIDS,
    LONG_STRAIGHT_FRINGE,
    NUISANCE_FIELDS,
    NUM_ATTRIBUTE_DIMS,
    NON_IDENTITY_FIELDS,
    SHORT,
    AvatarAttributes,
    attributes_from_normal,
    hairstyle_class,
    merge_identity,
    sample_attributes,
    split_identity,
)
from harness.demo.render import DEMO_SKIN_BOX, RenderMasks, render, skin_rgb

__all__ = [
    "AFRO",
    "ATTRIBUTE_NAMES",
    "BOB",
    "CLASS_NAMES",
    "CURLY_BOB_FRINGE",
    "DEMO_SKIN_BOX",
    "HAIR_FIELDS",
    "IDENTITY_FIELDS",
    "LONG_BRAIDS",
    "LONG_STRAIGHT_FRINGE",
    "NUISANCE_FIELDS",
    "NUM_ATTRIBUTE_DIMS",
    "NON_IDENTITY_FIELDS",
    "SHORT",
    "AvatarAttributes",
    "RenderMasks",
    "attributes_from_normal",
    "hairstyle_class",
    "merge_identity",
    "render",
    "sample_attributes",
    "skin_rgb",
    "split_identity",
]
