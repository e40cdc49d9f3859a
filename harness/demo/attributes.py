"""Attributes of a demo-world avatar, their prior, and the hairstyle classes they define.

Every attribute is a float in [0, 1], and the comment at each field of `AvatarAttributes`
gives what 0 and 1 mean. The prior is a plain function of standard normal variables:
attribute `i` is `F_i(Phi(u_i))`, where `Phi` is the normal CDF and `F_i` a piecewise-linear
quantile function (see `_PRIOR_KNOTS`). So a generator can be distilled against
`attributes_from_normal` directly, and gradients flow through it.

The five hair attributes that define the hairstyle classes have two-mode priors (length has
three modes) with little mass near the class thresholds. Renders near a threshold look
ambiguous, so the prior keeps them rare. The renderer itself is continuous in every attribute.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.errors import ShapeError, ValueRangeError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # eq would compare tensors, whose truth value is ambiguous
class AvatarAttributes:
    """Attributes of a batch of avatars: one float tensor `[N]` per field, each in [0, 1].

    Build it with `sample_attributes`, `attributes_from_normal` or `from_tensor`. `render` and
    `hairstyle_class` check the fields with `validate`.
    """

    # Hair. The first five define the hairstyle class (see `hairstyle_class`).
    # Length: 0 cropped above the ears, 0.3 to the mouth, 0.6 below the chin, 1 past the shoulders.
    hair_length: torch.Tensor
    # Curl: 0 straight (smooth outline, vertical strands) ... 1 curly (lobed outline, dark patches).
    hair_curl: torch.Tensor
    # Braids: 0 loose ... 1 fully braided (hanging braids, or braids ending above the mouth on
    # short hair), with cornrow stripes on the scalp whose contrast grows from 0 on.
    hair_braids: torch.Tensor
    hair_fringe: torch.Tensor  # 0 bare forehead ... 1 fringe down to the brows
    # Volume: 0 flat ... 1 full. Curly unbraided hair with high volume puffs up into an afro.
    hair_volume: torch.Tensor
    hair_darkness: torch.Tensor  # 0 light blond ... 1 black
    hair_hue: torch.Tensor  # 0 ash (neutral) ... 1 copper (red)

    # Skin. ITA measured in DEMO_SKIN_BOX falls monotonically from about +60 deg at 0 to about
    # -45 deg at 1 (with the neutral light_intensity of 0.5).
    skin_tone: torch.Tensor

    # Identity geometry: what stays fixed when one person is rendered under other hair. Sizes
    # are in units of half the image width.
    face_width: torch.Tensor  # 0 narrow ... 1 wide (face half-width 0.34 ... 0.44)
    face_height: torch.Tensor  # 0 short ... 1 long (face half-height 0.44 ... 0.54)
    jaw: torch.Tensor  # 0 pointed chin ... 1 square jaw
    eye_size: torch.Tensor  # 0 small ... 1 large eyes
    eye_spacing: torch.Tensor  # 0 close-set ... 1 wide-set eyes
    nose: torch.Tensor  # 0 short and narrow ... 1 long and wide nose
    mouth: torch.Tensor  # 0 narrow ... 1 wide mouth
    brows: torch.Tensor  # 0 thin ... 1 thick eyebrows
    eye_colour: torch.Tensor  # iris: 0 dark brown, 0.5 hazel green, 1 blue

    # Nuisance: picture conditions that change neither the hairstyle nor the identity.
    background_hue: torch.Tensor  # hue of the background, once around the colour wheel
    background_value: torch.Tensor  # 0 dark ... 1 light background
    shift_x: torch.Tensor  # 0 one pixel left, 0.5 centred, 1 one pixel right (at 64 px)
    shift_y: torch.Tensor  # 0 one pixel up, 0.5 centred, 1 one pixel down (at 64 px)
    tilt: torch.Tensor  # 0 head rolled 4 deg anticlockwise, 0.5 upright, 1 4 deg clockwise
    light_direction: torch.Tensor  # 0 key light from the left, 0.5 frontal, 1 from the right
    light_intensity: torch.Tensor  # brightness factor: 0 x0.92, 0.5 x1.0, 1 x1.08

    @property
    def num_samples(self) -> int:
        return int(self.hair_length.shape[0])

    def validate(self) -> None:
        """Raise ShapeError unless every field is a float tensor `[N]` with the same N.

        Raise ValueRangeError unless every value is finite and in [0, 1].
        """
        num_samples = None
        for name in ATTRIBUTE_NAMES:
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                if isinstance(value, torch.Tensor):
                    found = f"a tensor of dtype {value.dtype}"
                else:
                    found = type(value).__name__
                raise ShapeError(
                    f"attribute {name!r} must be a float tensor of shape [N], got {found}. "
                    f"Build attributes with sample_attributes, attributes_from_normal or "
                    f"AvatarAttributes.from_tensor"
                )
            if value.dim() != 1:
                raise ShapeError(
                    f"attribute {name!r} must have shape [N], got {list(value.shape)}"
                )
            if num_samples is None:
                num_samples = value.shape[0]
            elif value.shape[0] != num_samples:
                raise ShapeError(
                    f"attribute {name!r} has shape {list(value.shape)} but hair_length has "
                    f"[{num_samples}]. Every field must have the same number of samples"
                )
            if not bool(torch.isfinite(value).all()):
                raise ValueRangeError(f"attribute {name!r} contains NaN or infinite values")
            if value.numel() == 0:
                continue
            low, high = float(value.min()), float(value.max())
            if low < 0.0 or high > 1.0:
                raise ValueRangeError(
                    f"attribute {name!r} must lie in [0, 1], got values in [{low:.4g}, "
                    f"{high:.4g}]. Clamp it, or build it with attributes_from_normal"
                )

    def to_tensor(self) -> torch.Tensor:
        """Stack the fields into `[N, NUM_ATTRIBUTE_DIMS]`, columns in `ATTRIBUTE_NAMES` order."""
        return torch.stack([getattr(self, name) for name in ATTRIBUTE_NAMES], dim=1)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> AvatarAttributes:
        """Split `[N, NUM_ATTRIBUTE_DIMS]` columns (in `ATTRIBUTE_NAMES` order) into fields."""
        if values.dim() != 2 or values.shape[1] != NUM_ATTRIBUTE_DIMS:
            raise ShapeError(
                f"attribute matrix must have shape [N, {NUM_ATTRIBUTE_DIMS}] (columns in "
                f"ATTRIBUTE_NAMES order), got {list(values.shape)}"
            )
        return cls(**{name: values[:, i] for i, name in enumerate(ATTRIBUTE_NAMES)})

    def __getitem__(self, index: int | slice | torch.Tensor) -> AvatarAttributes:
        """Select samples. An int index keeps the batch dimension (`attrs[3]` has N = 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return AvatarAttributes(**{name: getattr(self, name)[index] for name in ATTRIBUTE_NAMES})

    def replace(self, **changes: torch.Tensor | float) -> AvatarAttributes:
        """Return a copy with some fields changed. A float sets the field for every sample."""
        filled = {}
        for name, value in changes.items():
            if name not in ATTRIBUTE_NAMES:
                known = ", ".join(ATTRIBUTE_NAMES)
                raise KeyError(f"unknown attribute {name!r}; known attributes: {known}")
            if not isinstance(value, torch.Tensor):
                value = torch.full_like(getattr(self, name), float(value))
            filled[name] = value
        return dataclasses.replace(self, **filled)

    @staticmethod
    def cat(parts: Sequence[AvatarAttributes]) -> AvatarAttributes:
        """Concatenate batches along the sample dimension."""
        return AvatarAttributes(
            **{name: torch.cat([getattr(part, name) for part in parts]) for name in ATTRIBUTE_NAMES}
        )


ATTRIBUTE_NAMES: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(AvatarAttributes)
)
NUM_ATTRIBUTE_DIMS = len(ATTRIBUTE_NAMES)

HAIR_FIELDS = ATTRIBUTE_NAMES[0:7]
SKIN_FIELDS = ("skin_tone",)
IDENTITY_FIELDS = ATTRIBUTE_NAMES[8:17]
NUISANCE_FIELDS = ATTRIBUTE_NAMES[17:]
NON_IDENTITY_FIELDS = tuple(name for name in ATTRIBUTE_NAMES if name not in IDENTITY_FIELDS)
assert IDENTITY_FIELDS[0] == "face_width"
assert IDENTITY_FIELDS[-1] == "eye_colour"
assert NUISANCE_FIELDS[0] == "background_hue"


# Class thresholds of `hairstyle_class`. Hair shorter than SHORT_MAX_LENGTH ends above the
# mouth, and hair of LONG_MIN_LENGTH or longer reaches below the chin.
SHORT_MAX_LENGTH = 0.3
LONG_MIN_LENGTH = 0.6
FEATURE_THRESHOLD = 0.5  # for curl, braids, fringe and volume

CLASS_NAMES = ("short", "bob", "curly_bob_fringe", "long_straight_fringe", "long_braids", "afro")
SHORT, BOB, CURLY_BOB_FRINGE, LONG_STRAIGHT_FRINGE, LONG_BRAIDS, AFRO = range(len(CLASS_NAMES))


_Knots = tuple[tuple[float, ...], tuple[float, ...]]  # (cumulative probabilities, values)


def _bimodal_knots(prob_high: float, gap_mass: float = 0.04) -> _Knots:
    """Return the quantile knots of a two-mode prior with P(value >= 0.5) = prob_high.

    The modes are uniform on [0, 0.25] and [0.75, 1], and `gap_mass` is spread over the gap.
    """
    low_mass = 1.0 - prob_high
    return (
        (0.0, low_mass - gap_mass / 2, low_mass + gap_mass / 2, 1.0),
        (0.0, 0.25, 0.75, 1.0),
    )


# Piecewise-linear quantile function of each attribute. Uniform attributes map Phi(u) straight
# through. The hair marginals are chosen so that every hairstyle class gets 10-25% of the
# prior, which the tests check on 20,000 samples.
_UNIFORM: _Knots = ((0.0, 1.0), (0.0, 1.0))
_PRIOR_KNOTS: dict[str, _Knots] = {name: _UNIFORM for name in ATTRIBUTE_NAMES}
_PRIOR_KNOTS.update(
    # Modes at [0, 0.25], [0.35, 0.55] and [0.65, 1], with 3% of the mass in each gap, so that
    # P(length < 0.3) = 0.25, P(0.3 <= length < 0.6) = 0.345 and P(length >= 0.6) = 0.405.
    hair_length=((0.0, 0.235, 0.265, 0.58, 0.61, 1.0), (0.0, 0.25, 0.35, 0.55, 0.65, 1.0)),
    hair_curl=_bimodal_knots(0.45),
    hair_braids=_bimodal_knots(0.2),
    # Fringes are common, so few curly or long straight hairstyles fall outside the fringe
    # classes into the catch-all `bob`.
    hair_fringe=_bimodal_knots(0.9),
    hair_volume=_bimodal_knots(0.5),
)


def _piecewise_linear(p: torch.Tensor, knots_p: Sequence[float], knots_value: Sequence[float]):
    """Interpolate linearly between knots. `knots_p` increases from 0 to 1."""
    value = torch.full_like(p, knots_value[0])
    for i in range(len(knots_p) - 1):
        width = knots_p[i + 1] - knots_p[i]
        slope = (knots_value[i + 1] - knots_value[i]) / width
        value = value + slope * (p - knots_p[i]).clamp(0.0, width)
    return value


def attributes_from_normal(u: torch.Tensor) -> AvatarAttributes:
    """Map standard normal variables `u` `[N, NUM_ATTRIBUTE_DIMS]` to attributes.

    Column `i` of `u` drives attribute `ATTRIBUTE_NAMES[i]` alone, through the normal CDF and
    that attribute's quantile function, so u ~ N(0, I) gives a sample of the prior. The map is
    monotonic in each column, continuous and differentiable almost everywhere.
    """
    if u.dim() != 2 or u.shape[1] != NUM_ATTRIBUTE_DIMS:
        raise ShapeError(
            f"u must have shape [N, {NUM_ATTRIBUTE_DIMS}] (one standard normal column per "
            f"attribute), got {list(u.shape)}"
        )
    if not u.is_floating_point():
        raise ShapeError(f"u must be a float tensor, got dtype {u.dtype}")
    # The clamp below catches float rounding in the knots, which could step just outside [0, 1].
    p = torch.special.ndtr(u)
    columns = {}
    for i, name in enumerate(ATTRIBUTE_NAMES):
        knots_p, knots_value = _PRIOR_KNOTS[name]
        columns[name] = _piecewise_linear(p[:, i], knots_p, knots_value).clamp(0.0, 1.0)
    return AvatarAttributes(**columns)


def sample_attributes(num_samples: int, seed: int) -> AvatarAttributes:
    """Draw `num_samples` attribute vectors from the prior, reproducibly for a seed.

    u is drawn on the CPU with a `torch.Generator` seeded with `seed`, so the same seed gives
    the same attributes on every machine.
    """
    if num_samples < 0:
        raise ValueRangeError(f"num_samples must be >= 0, got {num_samples}")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.randn(num_samples, NUM_ATTRIBUTE_DIMS, generator=generator)
    return attributes_from_normal(u)


def hairstyle_class(attributes: AvatarAttributes) -> torch.Tensor:
    """Return the hairstyle class index of each sample, a LongTensor `[N]` into CLASS_NAMES.

    The rules below partition the hair attribute space, and the first rule that matches wins.
    "High" means >= 0.5, "short" means length < 0.3 and "long" means length >= 0.6.

    1. `long_braids`: high braids and length >= 0.3 (braids hang at least to the mouth).
    2. `short`: high braids and length < 0.3 (short braids or cornrows).
    3. `afro`: high curl and high volume (the hair puffs into a large curly volume).
    4. `short`: length < 0.3.
    5. `curly_bob_fringe`: high curl and high fringe (low volume, length >= 0.3).
    6. `long_straight_fringe`: long, low curl and high fringe.
    7. `bob`: everything else. That is mostly medium-length straight hair, with or without a
       fringe. It also takes the curly or long straight hairstyles without a fringe, which
       are about 3% of the prior (17% of `bob`).

    Darkness and hue of the hair play no part.
    """
    attributes.validate()
    length = attributes.hair_length
    braided = attributes.hair_braids >= FEATURE_THRESHOLD
    curly = attributes.hair_curl >= FEATURE_THRESHOLD
    fringe = attributes.hair_fringe >= FEATURE_THRESHOLD
    full = attributes.hair_volume >= FEATURE_THRESHOLD
    short = length < SHORT_MAX_LENGTH
    long = length >= LONG_MIN_LENGTH

    # Apply the rules from last to first, so the first matching rule is written last and wins.
    classes = torch.full_like(length, BOB, dtype=torch.long)
    classes[~curly & long & fringe] = LONG_STRAIGHT_FRINGE
    classes[curly & fringe] = CURLY_BOB_FRINGE
    classes[short] = SHORT
    classes[curly & full] = AFRO
    classes[braided & short] = SHORT
    classes[braided & ~short] = LONG_BRAIDS
    return classes


def split_identity(attributes: AvatarAttributes) -> tuple[torch.Tensor, torch.Tensor]:
    """Split attributes into identity geometry and the rest.

    Return `identity` `[N, len(IDENTITY_FIELDS)]`, columns in IDENTITY_FIELDS order, and
    `other` `[N, len(NON_IDENTITY_FIELDS)]`: hair, skin tone and nuisance, columns in
    NON_IDENTITY_FIELDS order.
    """
    identity = torch.stack([getattr(attributes, name) for name in IDENTITY_FIELDS], dim=1)
    other = torch.stack([getattr(attributes, name) for name in NON_IDENTITY_FIELDS], dim=1)
    return identity, other


def merge_identity(identity: torch.Tensor, other: torch.Tensor) -> AvatarAttributes:
    """Join identity geometry and the other attributes, the inverse of `split_identity`.

    Either side may have one row, which is repeated to the other side's N: a single identity
    rendered under many hairstyles, or many identities under one hairstyle and pose.
    """
    if identity.dim() != 2 or identity.shape[1] != len(IDENTITY_FIELDS):
        raise ShapeError(
            f"identity must have shape [N, {len(IDENTITY_FIELDS)}] (columns "
            f"{', '.join(IDENTITY_FIELDS)}), got {list(identity.shape)}"
        )
    if other.dim() != 2 or other.shape[1] != len(NON_IDENTITY_FIELDS):
        raise ShapeError(
            f"other must have shape [N, {len(NON_IDENTITY_FIELDS)}] (columns in "
            f"NON_IDENTITY_FIELDS order), got {list(other.shape)}"
        )
    num_identity, num_other = identity.shape[0], other.shape[0]
    if num_identity != num_other and 1 not in (num_identity, num_other):
        raise ShapeError(
            f"identity has {num_identity} rows and other has {num_other}. They must match, "
            f"or one of them must have a single row, which is repeated"
        )
    num_samples = max(num_identity, num_other)
    identity = identity.expand(num_samples, -1)
    other = other.expand(num_samples, -1)
    columns = {name: identity[:, i] for i, name in enumerate(IDENTITY_FIELDS)}
    columns.update({name: other[:, i] for i, name in enumerate(NON_IDENTITY_FIELDS)})
    return AvatarAttributes(**{name: columns[name].contiguous() for name in ATTRIBUTE_NAMES})
