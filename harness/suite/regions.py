"""Named defaults for the two image regions a suite measures in.

A box is `(x0, y0, x1, y1)` in normalised image coordinates: (0, 0) is the top-left corner and
(1, 1) the bottom-right, so one box fits every resolution of the same framing. `face_crop` is
the square cut out for the identity model and resized to its input size (112 px for ArcFace). `skin` is the region whose
CIELab colour gives the skin-tone measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class RegionPreset:
    """Face crop and skin box for one framing of faces."""

    face_crop: Box
    skin: Box
    description: str


# FFHQ's alignment (`recreate_aligned_images` in NVlabs/ffhq-dataset's download_ffhq.py) makes
# the output side 4 times the eye distance or 3.6 times the eye-to-mouth distance, whichever is
# larger, and centres it 0.1 eye-to-mouth below the eye midpoint. For a typical face, whose
# eye-to-mouth distance is about its eye distance, the eyes land near (0.375, 0.47) and
# (0.625, 0.47) and the mouth near y = 0.73 (an estimate, not measured on FFHQ images).
# InsightFace's 112 px ArcFace template (`insightface.utils.face_align.arcface_dst`) puts the
# eyes at (38.29, 51.70) and (73.53, 51.50), 31.5% of the side apart, so fitting it to those eyes
# gives a square of side 0.8 from (0.10, 0.105). The skin box covers both cheeks and the nose,
# below the lower eyelids (y 0.54) and above the upper lip (y 0.66), within the jaw line.
FFHQ1024 = RegionPreset(
    face_crop=(0.10, 0.105, 0.90, 0.905),
    skin=(0.32, 0.54, 0.68, 0.66),
    description="FFHQ-aligned faces (StyleGAN2 FFHQ generators at any resolution)",
)

# The demo world's face ellipse is centred at x 0.5, y 0.46 and spans at most x 0.28-0.72 and
# y 0.19-0.73 (harness.demo.render: centre y -0.08 and half-sizes up to 0.44 x 0.54 in [-1, 1]
# coordinates). The crop is the square of side 0.62 around that centre.
# NOTE: the demo identity model must be trained on this same crop; nothing checks that here.
DEMO_FACE_CROP: Box = (0.19, 0.15, 0.81, 0.77)


def _demo_preset() -> RegionPreset:
    # Imported here because harness.demo.render imports torch, which `suite check` avoids
    # for suites that do not use this preset.
    from harness.demo.render import DEMO_SKIN_BOX

    return RegionPreset(
        face_crop=DEMO_FACE_CROP,
        skin=tuple(float(value) for value in DEMO_SKIN_BOX),
        description="64 px avatar world of the demo registry",
    )


PRESET_NAMES: tuple[str, ...] = ("demo", "ffhq1024")


def get_preset(name: str) -> RegionPreset:
    """Return the preset called `name` (one of PRESET_NAMES)."""
    if name == "demo":
        return _demo_preset()
    if name == "ffhq1024":
        return FFHQ1024
    raise KeyError(f"unknown region preset {name!r}; known presets: {', '.join(PRESET_NAMES)}")
