"""Tests of the demo-world renderer: prior, hairstyle classes, identity split and pixels."""

from __future__ import annotations

import sys

import pytest
import torch

from harness.demo import (
    ATTRIBUTE_NAMES,
    CLASS_NAMES,
    DEMO_SKIN_BOX,
    IDENTITY_FIELDS,
    NON_IDENTITY_FIELDS,
    NUM_ATTRIBUTE_DIMS,
    AvatarAttributes,
    attributes_from_normal,
    hairstyle_class,
    merge_identity,
    render,
    sample_attributes,
    skin_rgb,
    split_identity,
)
from harness.errors import ShapeError, ValueRangeError
from harness.metrics.skin_tone import box_weights, measure_skin_tone


def neutral(num_samples: int = 1, **changes: float) -> AvatarAttributes:
    """Attributes with every field at 0.5 (upright, centred, neutral light), then `changes`."""
    values = torch.full((num_samples, NUM_ATTRIBUTE_DIMS), 0.5)
    return AvatarAttributes.from_tensor(values).replace(**changes)


def hair(**changes: float) -> AvatarAttributes:
    """One neutral avatar with straight, loose, unbraided, medium hair and no fringe."""
    base = dict(hair_length=0.45, hair_curl=0.1, hair_braids=0.0, hair_fringe=0.0, hair_volume=0.1)
    return neutral(**{**base, **changes})


def row_of(y: float, size: int = 64) -> int:
    """Pixel row whose centre is nearest to normalised y in [-1, 1]."""
    return round((y + 1.0) * size / 2.0 - 0.5)


def col_of(x: float, size: int = 64) -> int:
    return row_of(x, size)


# --- prior ---------------------------------------------------------------------------------


def test_sample_attributes_is_deterministic():
    first = sample_attributes(64, seed=7).to_tensor()
    second = sample_attributes(64, seed=7).to_tensor()
    other = sample_attributes(64, seed=8).to_tensor()
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_prior_values_lie_in_unit_range():
    attributes = sample_attributes(5000, seed=0)
    attributes.validate()
    for name in ATTRIBUTE_NAMES:
        values = getattr(attributes, name)
        assert values.shape == (5000,), name
        assert float(values.min()) >= 0.0, name
        assert float(values.max()) <= 1.0, name
        assert float(values.max()) - float(values.min()) > 0.8, f"{name} barely varies"


def test_normal_map_is_monotonic_and_bounded():
    u = torch.linspace(-9.0, 9.0, 401)[:, None].repeat(1, NUM_ATTRIBUTE_DIMS)
    values = attributes_from_normal(u).to_tensor()
    assert float(values.min()) >= 0.0
    assert float(values.max()) <= 1.0
    assert bool((values[1:] >= values[:-1]).all())
    assert torch.allclose(values[0], torch.zeros(NUM_ATTRIBUTE_DIMS), atol=1e-6)
    assert torch.allclose(values[-1], torch.ones(NUM_ATTRIBUTE_DIMS), atol=1e-6)


def test_uniform_attribute_has_uniform_prior():
    # skin_tone maps Phi(u) straight through, so u = 0 is the median 0.5 and u = 1 is 0.8413.
    u = torch.zeros(2, NUM_ATTRIBUTE_DIMS)
    u[1] = 1.0
    skin = attributes_from_normal(u).skin_tone
    assert skin[0].item() == pytest.approx(0.5, abs=1e-6)
    assert skin[1].item() == pytest.approx(0.841345, abs=1e-5)


def test_normal_map_is_differentiable():
    u = torch.randn(8, NUM_ATTRIBUTE_DIMS, generator=torch.Generator().manual_seed(0))
    u.requires_grad_(True)
    attributes_from_normal(u).to_tensor().sum().backward()
    assert u.grad is not None
    assert bool((u.grad >= 0).all())
    assert float(u.grad.abs().sum()) > 0


def test_normal_map_rejects_wrong_shape():
    with pytest.raises(ShapeError, match=rf"\[N, {NUM_ATTRIBUTE_DIMS}\].*\[4, 3\]"):
        attributes_from_normal(torch.zeros(4, 3))


# --- hairstyle classes ---------------------------------------------------------------------


def test_class_frequencies_within_bounds():
    labels = hairstyle_class(sample_attributes(20000, seed=0))
    frequencies = torch.bincount(labels, minlength=len(CLASS_NAMES)).float() / len(labels)
    for name, frequency in zip(CLASS_NAMES, frequencies.tolist()):
        assert 0.10 <= frequency <= 0.25, f"{name}: {frequency:.3f}"


@pytest.mark.parametrize(
    "changes, expected",
    [
        (dict(hair_braids=0.9, hair_length=0.8), "long_braids"),
        (dict(hair_braids=0.5, hair_length=0.3), "long_braids"),  # both at the threshold
        (dict(hair_braids=0.9, hair_length=0.8, hair_curl=0.9, hair_volume=0.9), "long_braids"),
        (dict(hair_braids=0.9, hair_length=0.2), "short"),
        (dict(hair_braids=0.9, hair_length=0.2, hair_curl=0.9, hair_volume=0.9), "short"),
        (dict(hair_curl=0.9, hair_volume=0.9, hair_length=0.1), "afro"),
        (dict(hair_curl=0.5, hair_volume=0.5, hair_length=0.9, hair_fringe=0.9), "afro"),
        (dict(hair_length=0.1, hair_fringe=0.9), "short"),
        (dict(hair_length=0.29, hair_curl=0.9, hair_fringe=0.9), "short"),
        (dict(hair_length=0.45, hair_curl=0.9, hair_fringe=0.9), "curly_bob_fringe"),
        (dict(hair_length=0.9, hair_curl=0.9, hair_fringe=0.5), "curly_bob_fringe"),
        (dict(hair_length=0.6, hair_fringe=0.9), "long_straight_fringe"),
        (dict(hair_length=0.45, hair_fringe=0.9), "bob"),
        (dict(hair_length=0.45), "bob"),
        (dict(hair_length=0.59, hair_fringe=0.9), "bob"),
        (dict(hair_length=0.9, hair_fringe=0.2), "bob"),  # long straight without a fringe
        (dict(hair_length=0.45, hair_curl=0.9), "bob"),  # curly without a fringe
        (dict(hair_length=0.45, hair_braids=0.49), "bob"),
    ],
)
def test_hairstyle_class_rules(changes, expected):
    label = hairstyle_class(hair(**changes))
    assert CLASS_NAMES[int(label)] == expected


def test_hairstyle_class_ignores_colour_and_identity():
    attributes = sample_attributes(500, seed=3)
    labels = hairstyle_class(attributes)
    changed = attributes.replace(hair_darkness=0.0, hair_hue=1.0, face_width=1.0, skin_tone=0.0)
    assert torch.equal(hairstyle_class(changed), labels)


def test_every_hair_vector_gets_a_class():
    generator = torch.Generator().manual_seed(1)
    values = torch.rand(4000, NUM_ATTRIBUTE_DIMS, generator=generator)  # uniform, not the prior
    labels = hairstyle_class(AvatarAttributes.from_tensor(values))
    assert labels.dtype == torch.long
    assert labels.shape == (4000,)
    assert set(labels.tolist()) == set(range(len(CLASS_NAMES)))


# --- identity split ------------------------------------------------------------------------


def test_split_and_merge_round_trip():
    attributes = sample_attributes(16, seed=2)
    identity, rest = split_identity(attributes)
    assert identity.shape == (16, len(IDENTITY_FIELDS))
    assert rest.shape == (16, len(NON_IDENTITY_FIELDS))
    assert torch.equal(merge_identity(identity, rest).to_tensor(), attributes.to_tensor())


def test_merge_repeats_a_single_identity():
    attributes = sample_attributes(5, seed=2)
    identity, rest = split_identity(attributes)
    merged = merge_identity(identity[:1], rest)
    assert merged.num_samples == 5
    for name in IDENTITY_FIELDS:
        assert torch.equal(getattr(merged, name), getattr(attributes, name)[:1].expand(5)), name
    for name in NON_IDENTITY_FIELDS:
        assert torch.equal(getattr(merged, name), getattr(attributes, name)), name


def test_merge_rejects_mismatched_rows():
    identity, rest = split_identity(sample_attributes(4, seed=2))
    with pytest.raises(ShapeError, match="3 rows.*4"):
        merge_identity(identity[:3], rest)
    with pytest.raises(ShapeError, match=rf"\[N, {len(IDENTITY_FIELDS)}\]"):
        merge_identity(identity[:, :5], rest)


def test_same_identity_renders_same_geometry():
    # One identity under four other hairstyles, skin tones and backgrounds, upright and
    # centred: the skin mask between the brows and the mouth depends only on the geometry.
    pose = dict(shift_x=0.5, shift_y=0.5, tilt=0.5)
    others = sample_attributes(4, seed=11).replace(**pose)
    identities = sample_attributes(2, seed=12)
    identity, _ = split_identity(identities)
    _, rest = split_identity(others)
    rows, cols = slice(row_of(-0.08), row_of(0.11) + 1), slice(col_of(-0.23), col_of(0.23) + 1)

    _, same = render(merge_identity(identity[:1], rest), return_masks=True)
    _, different = render(merge_identity(identity[1:], rest), return_masks=True)
    same_skin = same.skin[:, rows, cols]
    for i in range(1, 4):
        assert torch.allclose(same_skin[i], same_skin[0], atol=1e-5), i
    # Another identity moves eyes, nose or mouth by several pixels' worth of coverage.
    assert float((different.skin[0, rows, cols] - same_skin[0]).abs().sum()) > 3.0


# --- pixels --------------------------------------------------------------------------------


def test_render_shape_range_and_determinism():
    attributes = sample_attributes(12, seed=5)
    images = render(attributes)
    assert images.shape == (12, 3, 64, 64)
    assert images.dtype == torch.float32
    assert float(images.min()) >= 0.0
    assert float(images.max()) <= 1.0
    assert torch.equal(render(attributes), images)
    assert not torch.equal(images[0], images[1])


def test_chunk_size_does_not_change_pixels():
    attributes = sample_attributes(10, seed=6)
    whole = render(attributes, chunk_size=32)
    chunked = render(attributes, chunk_size=3)
    single = torch.cat([render(attributes[i]) for i in range(10)])
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert torch.allclose(whole, single, atol=1e-5)


def test_feature_window_clips_nothing(monkeypatch):
    # The largest features, shifted as far as the prior allows, drawn inside the feature
    # window and on the whole image, give the same pixels.
    renderer = sys.modules["harness.demo.render"]
    largest = dict(eye_size=1.0, eye_spacing=1.0, brows=1.0, mouth=1.0, nose=1.0, face_height=1.0)
    attributes = AvatarAttributes.cat(
        [neutral(**largest, shift_x=x, shift_y=y) for x in (0.0, 1.0) for y in (0.0, 1.0)]
    )
    windowed = render(attributes)
    whole = (slice(0, 64), slice(0, 64))
    monkeypatch.setattr(renderer, "_feature_window", lambda size: whole)
    assert torch.allclose(render(attributes), windowed, atol=1e-6)


def test_render_other_sizes():
    attributes = sample_attributes(2, seed=6)
    assert render(attributes, size=32).shape == (2, 3, 32, 32)
    with pytest.raises(ValueRangeError, match="at least 16"):
        render(attributes, size=8)


def test_render_masks_are_coverages():
    images, masks = render(sample_attributes(8, seed=4), return_masks=True)
    assert masks.skin.shape == (8, 64, 64)
    assert masks.hair.shape == (8, 64, 64)
    for mask in masks:
        assert float(mask.min()) >= 0.0
        assert float(mask.max()) <= 1.0
    assert float((masks.skin + masks.hair).max()) <= 1.0 + 1e-5


def test_rejects_out_of_range_attribute():
    attributes = neutral(2).replace(hair_curl=torch.tensor([0.2, 1.5]))
    with pytest.raises(ValueRangeError, match=r"'hair_curl'.*\[0, 1\].*1\.5"):
        render(attributes)


def test_rejects_fields_of_different_lengths():
    attributes = neutral(3).replace(skin_tone=torch.zeros(2))
    with pytest.raises(ShapeError, match=r"'skin_tone'.*\[2\].*\[3\]"):
        render(attributes)


def test_rejects_non_float_field():
    attributes = neutral(2).replace(jaw=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"'jaw'.*float"):
        hairstyle_class(attributes)


def test_from_tensor_rejects_wrong_width():
    with pytest.raises(ShapeError, match=rf"\[N, {NUM_ATTRIBUTE_DIMS}\].*\[2, 5\]"):
        AvatarAttributes.from_tensor(torch.zeros(2, 5))


# --- skin ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_skin_ita_spans_range_and_is_monotonic(seed):
    # A sweep of skin tone on one random avatar (pose, light and hair included).
    base = sample_attributes(1, seed=seed).to_tensor().repeat(21, 1)
    attributes = AvatarAttributes.from_tensor(base).replace(skin_tone=torch.linspace(0, 1, 21))
    ita = measure_skin_tone(render(attributes), DEMO_SKIN_BOX).ita_deg
    assert ita[0].item() >= 55.0
    assert ita[-1].item() <= -35.0
    assert bool((ita[1:] < ita[:-1]).all()), ita.tolist()


def test_skin_palette_ita():
    tones = torch.tensor([0.0, 0.5, 1.0])
    patches = skin_rgb(tones)[:, :, None, None].expand(3, 3, 4, 4)
    ita = measure_skin_tone(patches, (0.0, 0.0, 1.0, 1.0)).ita_deg
    assert ita.tolist() == pytest.approx([62.0, 8.5, -45.0], abs=0.3)

    # In renders with neutral light, the face shading darkens the cheek by about 2%.
    attributes = neutral(3).replace(skin_tone=tones)
    rendered = measure_skin_tone(render(attributes), DEMO_SKIN_BOX).ita_deg
    assert rendered.tolist() == pytest.approx([62.0, 8.5, -45.0], abs=4.0)


def test_skin_box_is_skin_across_the_prior():
    _, masks = render(sample_attributes(512, seed=9), return_masks=True)
    rows, columns = box_weights(DEMO_SKIN_BOX, 64, 64)
    weights = rows[:, None] * columns[None, :]
    skin_fraction = (masks.skin * weights).sum(dim=(1, 2)) / weights.sum()
    worst = int(skin_fraction.argmin())
    assert skin_fraction[worst].item() >= 0.95, f"sample {worst}: {skin_fraction[worst]:.3f}"


# --- hairstyles look distinct --------------------------------------------------------------


def hair_mask(**changes: float) -> torch.Tensor:
    _, masks = render(hair(**changes), return_masks=True)
    return masks.hair[0]


def test_short_hair_ends_above_the_mouth():
    mask = hair_mask(hair_length=0.1)
    assert float(mask[row_of(0.2) :].max()) < 0.01  # nothing below mouth level
    assert float(mask[row_of(-0.6)].max()) > 0.99  # the cap on top of the head


def test_bob_ends_at_the_chin():
    mask = hair_mask(hair_length=0.45)
    beside_face = col_of(-0.405)  # between the face and the hair's outer edge
    assert float(mask[row_of(0.15), beside_face]) > 0.99
    assert float(mask[row_of(0.6) :].max()) < 0.01


def test_long_hair_reaches_the_shoulders():
    mask = hair_mask(hair_length=0.9)
    assert float(mask[row_of(0.85), col_of(-0.405)]) > 0.99


def test_fringe_covers_the_forehead():
    forehead = (row_of(-0.29), col_of(0.0))  # about 1.5 px above the fringe's lower edge
    assert float(hair_mask(hair_fringe=1.0)[forehead]) > 0.99
    assert float(hair_mask(hair_fringe=0.0)[forehead]) < 0.01


def test_afro_is_a_large_volume():
    afro = hair_mask(hair_length=0.1, hair_curl=0.9, hair_volume=0.9)
    short = hair_mask(hair_length=0.1, hair_curl=0.9, hair_volume=0.1)
    assert float(afro.sum()) > 2.5 * float(short.sum())


def test_curls_make_the_outline_lobed():
    # Perimeter of the hair mask, as the sum of differences between neighbouring pixels.
    def perimeter(mask: torch.Tensor) -> float:
        return float((mask[1:] - mask[:-1]).abs().sum() + (mask[:, 1:] - mask[:, :-1]).abs().sum())

    # The area between the curly and the straight outline, per pixel of perimeter, is how far
    # the lobes move the outline on average (0.42 at curl 1 and 0.05 at curl 0.1).
    straight = hair_mask(hair_length=0.45, hair_curl=0.0)
    curly = hair_mask(hair_length=0.45, hair_curl=1.0)
    wavy = hair_mask(hair_length=0.45, hair_curl=0.1)
    assert float((curly - straight).abs().sum()) > 0.3 * perimeter(straight)
    assert float((wavy - straight).abs().sum()) < 0.1 * perimeter(straight)


def test_braids_are_separate_strands():
    braided = hair_mask(hair_length=0.8, hair_braids=1.0)
    loose = hair_mask(hair_length=0.8, hair_braids=0.0)

    def runs(row: torch.Tensor) -> int:
        """Number of separate stretches of hair in one row."""
        inside = (row > 0.5).int()
        return int((inside[1:] - inside[:-1] == 1).sum()) + int(inside[0])

    chin_level = row_of(0.5)
    assert runs(braided[chin_level]) == 4  # two strands on each side of the neck
    assert runs(loose[chin_level]) == 2  # one sheet of hair on each side
