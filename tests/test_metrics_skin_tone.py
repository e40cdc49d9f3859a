"""Tests of the skin-tone metric against CIELab values computed independently in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.demo import DEMO_SKIN_BOX
from harness.errors import ConfigError, ShapeError, ValueRangeError
from harness.metrics import METRICS
from harness.metrics.skin_tone import (
    SKIN_BOXES,
    box_weights,
    measure_skin_tone,
    skin_tone_deltas,
    validate_box,
    wrap_deg,
)

# sRGB (IEC 61966-2-1) primaries to CIE XYZ, and the D65 white point.
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def reference_lab(rgb) -> np.ndarray:
    """CIELab (D65 white) of one sRGB colour in [0, 1], from the sRGB transfer curve, the
    sRGB-to-XYZ matrix and the CIE 1976 L*a*b* formulas with the exact CIE constants."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = SRGB_TO_XYZ @ linear / D65_WHITE
    epsilon, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > epsilon, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def patch(rgb, size: int = 8) -> torch.Tensor:
    """A uniform image `[1, 3, size, size]` of one colour."""
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)

COLOURS = [
    (1.0, 1.0, 1.0),
    (0.0, 0.0, 0.0),
    (0.5, 0.5, 0.5),
    (1.0, 0.0, 0.0),
    (0.0, 0.0, 1.0),
    (0.85, 0.65, 0.55),  # light skin
    (0.55, 0.38, 0.28),  # medium skin
    (0.35, 0.22, 0.15),  # dark skin
    (0.02, 0.01, 0.03),  # below the linear-segment threshold of L*
]


@pytest.mark.parametrize("rgb", COLOURS)
def test_uniform_patch_matches_reference_lab(rgb):
    tone = measure_skin_tone(patch(rgb), WHOLE_IMAGE)
    L, a, b = reference_lab(rgb)
    assert tone.L.item() == pytest.approx(L, abs=0.02)
    assert tone.a.item() == pytest.approx(a, abs=0.02)
    assert tone.b.item() == pytest.approx(b, abs=0.02)


def test_known_reference_values():
    white = measure_skin_tone(patch((1.0, 1.0, 1.0)), WHOLE_IMAGE)
    assert white.L.item() == pytest.approx(100.0, abs=0.01)
    assert white.a.item() == pytest.approx(0.0, abs=0.01)
    assert white.b.item() == pytest.approx(0.0, abs=0.01)
    # sRGB red (255, 0, 0) is L* 53.24, a* 80.09, b* 67.20 under D65.
    red = measure_skin_tone(patch((1.0, 0.0, 0.0)), WHOLE_IMAGE)
    assert red.L.item() == pytest.approx(53.24, abs=0.01)
    assert red.a.item() == pytest.approx(80.09, abs=0.01)
    assert red.b.item() == pytest.approx(67.20, abs=0.01)


@pytest.mark.parametrize("rgb", COLOURS[5:8])
def test_ita_and_hue_follow_their_formulas(rgb):
    tone = measure_skin_tone(patch(rgb), WHOLE_IMAGE)
    L, a, b = reference_lab(rgb)
    assert b > 0  # skin, where atan2 and the usual arctan((L - 50) / b) agree
    assert tone.ita_deg.item() == pytest.approx(math.degrees(math.atan((L - 50) / b)), abs=0.05)
    assert tone.hue_deg.item() == pytest.approx(math.degrees(math.atan2(b, a)), abs=0.05)


def test_ita_sign_and_monotonic_in_lightness():
    # A skin-coloured ramp from light to dark: ITA falls and changes sign where L* crosses 50.
    darkness = torch.linspace(0.0, 1.0, 11)
    light = torch.tensor([0.92, 0.76, 0.66])
    dark = torch.tensor([0.30, 0.18, 0.12])
    colours = light + (dark - light) * darkness[:, None]
    images = colours[:, :, None, None].expand(11, 3, 4, 4)
    tone = measure_skin_tone(images, WHOLE_IMAGE)
    assert bool((tone.ita_deg[1:] < tone.ita_deg[:-1]).all())
    assert bool(((tone.ita_deg > 0) == (tone.L > 50)).all())
    assert tone.ita_deg[0].item() > 0
    assert tone.ita_deg[-1].item() < 0


@pytest.mark.parametrize(
    "angle, wrapped",
    [(0.0, 0.0), (179.0, 179.0), (180.0, -180.0), (-180.0, -180.0), (190.0, -170.0),
     (-190.0, 170.0), (359.0, -1.0), (-358.0, 2.0), (720.0, 0.0)],
)
def test_wrap_deg(angle, wrapped):
    assert wrap_deg(torch.tensor(angle)).item() == pytest.approx(wrapped, abs=1e-4)


def test_hue_delta_wraps_across_180():
    # Both colours have a* < 0; b* changes sign, so the hue crosses +-180 deg.
    first_rgb, last_rgb = (0.2, 0.6, 0.52), (0.2, 0.6, 0.55)
    first_hue = math.degrees(math.atan2(*reference_lab(first_rgb)[[2, 1]]))
    last_hue = math.degrees(math.atan2(*reference_lab(last_rgb)[[2, 1]]))
    assert first_hue > 170
    assert last_hue < -170
    deltas = skin_tone_deltas(patch(first_rgb), patch(last_rgb), WHOLE_IMAGE)
    expected = last_hue - first_hue + 360.0  # about +7 deg, not about -353 deg
    assert deltas["skin_hue_delta_deg"].item() == pytest.approx(expected, abs=0.05)


def test_deltas_are_last_minus_first():
    light, dark = (0.85, 0.65, 0.55), (0.35, 0.22, 0.15)
    first = torch.cat([patch(light), patch(dark)])
    last = torch.cat([patch(dark), patch(light)])
    deltas = skin_tone_deltas(first, last, WHOLE_IMAGE)
    assert set(deltas) == {"skin_ita_delta_deg", "skin_L_delta", "skin_hue_delta_deg"}
    assert set(deltas) <= set(METRICS)

    L_light, _, b_light = reference_lab(light)
    L_dark, _, b_dark = reference_lab(dark)
    ita_light = math.degrees(math.atan2(L_light - 50, b_light))
    ita_dark = math.degrees(math.atan2(L_dark - 50, b_dark))
    assert deltas["skin_L_delta"].tolist() == pytest.approx(
        [L_dark - L_light, L_light - L_dark], abs=0.05
    )
    assert deltas["skin_ita_delta_deg"].tolist() == pytest.approx(
        [ita_dark - ita_light, ita_light - ita_dark], abs=0.05
    )
    assert deltas["skin_ita_delta_deg"][0].item() < 0  # darker skin at the end


def test_box_crops_to_its_pixels():
    # A 16x16 image: the box (0.25, 0.5)-(0.5, 0.75) is columns 4-7 and rows 8-11.
    inside, outside = (0.8, 0.6, 0.5), (0.1, 0.5, 0.9)
    image = patch(outside, size=16)
    image[:, :, 8:12, 4:8] = torch.tensor(inside).view(1, 3, 1, 1)
    tone = measure_skin_tone(image, (0.25, 0.5, 0.5, 0.75))
    assert [tone.L.item(), tone.a.item(), tone.b.item()] == pytest.approx(
        reference_lab(inside).tolist(), abs=0.02
    )


def test_box_weights_partial_pixels():
    # The box reaches half a pixel into column 8, which has the outside colour.
    inside, outside = (0.8, 0.6, 0.5), (0.1, 0.5, 0.9)
    image = patch(outside, size=16)
    image[:, :, 8:12, 4:8] = torch.tensor(inside).view(1, 3, 1, 1)
    tone = measure_skin_tone(image, (0.25, 0.5, 0.5 + 0.5 / 16, 0.75))
    expected = (4.0 * reference_lab(inside) + 0.5 * reference_lab(outside)) / 4.5
    measured = [tone.L.item(), tone.a.item(), tone.b.item()]
    assert measured == pytest.approx(expected.tolist(), abs=0.02)

    rows, columns = box_weights((0.25, 0.5, 0.5 + 0.5 / 16, 0.75), 16, 16)
    assert rows.tolist() == [0.0] * 8 + [1.0] * 4 + [0.0] * 4
    assert columns.tolist() == [0.0] * 4 + [1.0] * 4 + [0.5] + [0.0] * 7


def test_demo_box_is_the_default():
    assert SKIN_BOXES["demo"] == DEMO_SKIN_BOX
    assert validate_box(DEMO_SKIN_BOX) == tuple(DEMO_SKIN_BOX)
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    default = measure_skin_tone(image)
    explicit = measure_skin_tone(image, DEMO_SKIN_BOX)
    assert torch.equal(default.L, explicit.L)


def test_other_resolutions_measure_the_same_region():
    inside, outside = (0.8, 0.6, 0.5), (0.1, 0.5, 0.9)
    box = (0.25, 0.5, 0.5, 0.75)
    for size in (16, 32, 64):
        image = patch(outside, size=size)
        rows = slice(size // 2, size * 3 // 4)
        cols = slice(size // 4, size // 2)
        image[:, :, rows, cols] = torch.tensor(inside).view(1, 3, 1, 1)
        tone = measure_skin_tone(image, box)
        assert tone.L.item() == pytest.approx(reference_lab(inside)[0], abs=0.02), size


# --- input validation ----------------------------------------------------------------------


def test_rejects_image_without_batch_dimension():
    with pytest.raises(ShapeError, match=r"\[N, 3, H, W\].*\[3, 8, 8\]"):
        measure_skin_tone(torch.zeros(3, 8, 8), WHOLE_IMAGE)


def test_rejects_four_channels():
    with pytest.raises(ShapeError, match=r"\[N, 3, H, W\].*\[2, 4, 8, 8\]"):
        measure_skin_tone(torch.zeros(2, 4, 8, 8), WHOLE_IMAGE)


def test_rejects_integer_images():
    with pytest.raises(ShapeError, match="uint8.*255"):
        measure_skin_tone(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), WHOLE_IMAGE)


def test_rejects_generator_range():
    images = torch.full((1, 3, 8, 8), -0.8)
    with pytest.raises(ValueRangeError, match=r"\[0, 1\].*\(x \+ 1\) / 2"):
        measure_skin_tone(images, WHOLE_IMAGE)


def test_clamps_tiny_overshoot():
    images = torch.full((1, 3, 8, 8), 1.0 + 1e-4)
    assert measure_skin_tone(images, WHOLE_IMAGE).L.item() == pytest.approx(100.0, abs=0.01)


def test_rejects_mismatched_frames():
    with pytest.raises(ShapeError, match=r"first and last.*\[2, 3, 8, 8\].*\[3, 3, 8, 8\]"):
        skin_tone_deltas(torch.zeros(2, 3, 8, 8), torch.zeros(3, 3, 8, 8), WHOLE_IMAGE)


def test_names_the_frame_with_bad_values():
    good = torch.zeros(1, 3, 8, 8)
    bad = torch.full((1, 3, 8, 8), 2.0)
    with pytest.raises(ValueRangeError, match="^last"):
        skin_tone_deltas(good, bad, WHOLE_IMAGE)


@pytest.mark.parametrize(
    "box, message",
    [
        ((0.2, 0.2, 1.2, 0.5), r"\(0\.2, 0\.2, 1\.2, 0\.5\) lies outside"),
        ((-0.1, 0.2, 0.5, 0.5), r"\(-0\.1, 0\.2, 0\.5, 0\.5\) lies outside"),
        ((0.4, 0.2, 0.4, 0.5), r"\(0\.4, 0\.2, 0\.4, 0\.5\) is empty"),
        ((0.4, 0.6, 0.5, 0.5), r"\(0\.4, 0\.6, 0\.5, 0\.5\) is empty"),
        ((0.1, 0.2, 0.3), r"\(0\.1, 0\.2, 0\.3\) must be four numbers"),
        ((0.1, 0.2, 0.3, float("nan")), r"lies outside"),
    ],
)
def test_rejects_bad_box(box, message):
    with pytest.raises(ConfigError, match=message):
        measure_skin_tone(torch.zeros(1, 3, 8, 8), box)
