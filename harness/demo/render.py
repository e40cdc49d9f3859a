"""Procedural renderer of demo-world avatars: attributes in, anti-aliased RGB images out.

Images are float32 tensors `[N, 3, size, size]` in sRGB with values in [0, 1]. A StyleGAN2
that works in [-1, 1] converts them with `2 * image - 1`. Rendering is a pure function of the
attributes (no random numbers), so the same attributes give the same pixels.

Every part (clothes, hair, braids, neck, face, eyes, brows, nose, mouth, fringe) is a signed
distance function of the pixel centre, negative inside. Its coverage ramps linearly from 1 to 0
across one pixel at the edge, which anti-aliases it, and the parts are composited back to
front.

Coordinates: x to the right and y downwards, both in [-1, 1] across the image, so one unit is
half the image width (32 px at 64 px). The head is drawn upright in a frame shifted by
`shift_x` and `shift_y`. Then the finished image is rolled by `tilt` about the image centre,
with bilinear resampling. Upright, x varies only along columns and y only along rows, so most
per-pixel work is a single broadcast of a column tensor `[n, 1, S]` against a row tensor
`[n, S, 1]`. That keeps rendering fast on a CPU (benchmarks/render.py prints the rate).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import kornia.color
import torch

from harness.demo.attributes import AvatarAttributes
from harness.errors import ValueRangeError

log = logging.getLogger(__name__)

DEFAULT_SIZE = 64
MIN_SIZE = 16

# Skin-only box on the viewer's left cheek, as (x0, y0, x1, y1) in normalised image
# coordinates (in [0, 1], y downwards). For every identity and pose of the prior it lies inside
# the face edge, left of the nose, below the eyes and above the mouth. About 3 x 3 px at 64 px.
# The tests render 512 prior samples and check that it is at least 95% skin in each.
DEMO_SKIN_BOX = (0.39, 0.50, 0.44, 0.55)

HEAD_CENTRE_Y = -0.08  # centre of the face outline, just below the eyes
MAX_SHIFT = 2.0 / 64  # one pixel at 64 px
MAX_TILT_DEG = 4.0

# Spatial frequencies of the hair textures, in radians per unit (period at 64 px in brackets).
# The periods are 6 px or more, because the demo StyleGAN2 (trained for a few hours on a
# 2-core CPU) does not learn patterns of 4 px or less. Curl spots of 3.8 px stayed a flat blur even
# when it was trained on 32 fixed renders, so hair cues at that scale were invisible in its
# samples.
_BUMP_FREQ = 2 * math.pi / 0.5  # curl lobes on outlines (16 px)
_STREAK_FREQ = 2 * math.pi / 0.2  # vertical strands of straight hair (6.4 px)
_SPOT_FREQ = 2 * math.pi / 0.5  # dark patches of curly hair (16 px)
_CORNROW_FREQ = 2 * math.pi / 0.2  # cornrow stripes of braided hair on the scalp (6.4 px)
_BRAID_PERIOD = 0.2  # length of one braid segment (6.4 px)

_CLOTHES_RGB = (0.22, 0.27, 0.36)
_SCLERA_RGB = (0.93, 0.92, 0.88)
_PUPIL_RGB = (0.04, 0.03, 0.03)
_LIP_RGB = (0.62, 0.22, 0.24)
_HAIR_ASH_RGB = (0.80, 0.70, 0.50)
_HAIR_COPPER_RGB = (0.80, 0.42, 0.20)
_HAIR_BLACK_RGB = (0.07, 0.05, 0.04)
_IRIS_RGB = ((0.30, 0.17, 0.08), (0.38, 0.46, 0.24), (0.32, 0.52, 0.78))  # eye_colour 0, 0.5, 1


class RenderMasks(NamedTuple):
    """Per-pixel coverage `[N, size, size]` in [0, 1] of visible skin and of visible hair.

    Skin is the face and neck minus everything drawn over them (eyes, brows, nose shadow,
    mouth, fringe). Hair is every hair part minus the face and neck drawn over it.
    """

    skin: torch.Tensor
    hair: torch.Tensor


def render(
    attributes: AvatarAttributes,
    size: int = DEFAULT_SIZE,
    return_masks: bool = False,
    chunk_size: int = 128,
) -> torch.Tensor | tuple[torch.Tensor, RenderMasks]:
    """Render avatars as float32 images `[N, 3, size, size]` in [0, 1] on the CPU.

    The attributes must be CPU tensors. With `return_masks`, also return the skin and hair
    masks (`RenderMasks`). Samples are drawn in chunks of `chunk_size` so that intermediate
    tensors stay small. Chunk size 128 was the fastest on a 2-core CPU, and it changes the
    pixels by float rounding at most (below 1e-5).
    """
    attributes.validate()
    if size < MIN_SIZE:
        raise ValueRangeError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    if chunk_size < 1:
        raise ValueRangeError(f"chunk_size must be at least 1, got {chunk_size}")
    num_samples = attributes.num_samples
    num_channels = 5 if return_masks else 3  # RGB, then skin and hair masks
    output = torch.empty(num_samples, num_channels, size, size)
    with torch.no_grad():
        for start in range(0, num_samples, chunk_size):
            stop = min(start + chunk_size, num_samples)
            _render_chunk(attributes[start:stop], size, output[start:stop])
    if return_masks:
        masks = RenderMasks(skin=output[:, 3].contiguous(), hair=output[:, 4].contiguous())
        return output[:, :3].contiguous(), masks
    return output


def skin_rgb(skin_tone: torch.Tensor) -> torch.Tensor:
    """Return the sRGB skin colour `[N, 3]` for skin tones `[N]` in [0, 1].

    The palette is defined in CIELab. The individual typology angle ITA = atan((L* - 50) / b*)
    falls linearly from +62 deg at tone 0 to -45 deg at tone 1. b* rises from 14 to about 22
    and falls back to 17, and L* = 50 + b* tan(ITA) follows, from 76 down to 33. Face shading
    and lighting in the renders move the measured ITA by a few degrees.
    """
    tone = skin_tone.float()
    ita = torch.deg2rad(62.0 - 107.0 * tone)
    b_star = 14.0 + 29.0 * tone - 26.0 * tone**2
    lightness = 50.0 + b_star * torch.tan(ita)
    a_star = 8.0 + 12.0 * tone - 6.0 * tone**2
    lab = torch.stack([lightness, a_star, b_star], dim=1)[:, :, None, None]  # [N, 3, 1, 1]
    return kornia.color.lab_to_rgb(lab)[:, :, 0, 0]


def _smoothstep(value: torch.Tensor, low: float = 0.3, high: float = 0.7) -> torch.Tensor:
    """Return 0 below `low` and 1 above `high`, with a cubic ramp between.

    The default ramp spans the prior's gap around the class threshold 0.5.
    """
    t = ((value - low) / (high - low)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rgb(colour: tuple[float, float, float]) -> torch.Tensor:
    """Return an RGB constant as `[1, 3, 1, 1]`."""
    return torch.tensor(colour).view(1, 3, 1, 1)


def _lerp_rgb(start: tuple[float, ...], end: tuple[float, ...], weight: torch.Tensor):
    """Blend two RGB constants by `weight` `[n, 1, 1]`, giving `[n, 3, 1, 1]`."""
    return _rgb(start) + (_rgb(end) - _rgb(start)) * weight.unsqueeze(1)


def _coverage(distance: torch.Tensor, pixel: float) -> torch.Tensor:
    """Return the fraction of each pixel inside a shape, which ramps linearly over one pixel
    across the edge."""
    return (0.5 - distance / pixel).clamp_(0.0, 1.0)


def _half_chord(offset: torch.Tensor, radius: float | torch.Tensor, other_radius, exponent=2.0):
    """Return the half-width of a superellipse and the cosine of its edge's slope.

    The superellipse is |u / radius|^p + |v / other_radius|^p = 1, and `offset` is v, the
    distance from its centre along the other axis. `offset` is a row tensor `[n, S, 1]` or a
    column tensor `[n, 1, S]`, and both results have its shape. Past the end of the shape the
    half-width is 0 and the cosine about 0.
    """
    t = (offset.abs() / other_radius).clamp(1e-6, 1.0)
    power = t**exponent
    inner = (1.0 - power).clamp_min(1e-6)
    half_chord = radius * inner ** (1.0 / exponent)
    slope = radius * inner ** (1.0 / exponent - 1.0) * power / t / other_radius
    return half_chord, 1.0 / torch.sqrt(1.0 + slope.square())


def _ellipse_distance(offset_x, offset_y, radius_x, radius_y) -> torch.Tensor:
    """Approximate signed distance `[n, S, S]` to an axis-aligned ellipse.

    `offset_x` `[n, 1, S]` is |x - centre x| per column and `offset_y` `[n, S, 1]` is
    y - centre y per row. Outside the ellipse the estimate is the largest of four lower
    bounds, each cheap to broadcast:

    - the distance to the tangent at the edge of the same row,
    - the distance to the tangent at the edge of the same column,
    - the distance to the bounding box,
    - the gap between the ellipse and its scaled copy through the pixel.

    Near the edge, where the coverage ramp needs it, the estimate is close to the true
    distance (the row or column tangent is a first-order approximation of the edge).
    """
    row_chord, row_cosine = _half_chord(offset_y, radius_x, radius_y)
    column_chord, column_cosine = _half_chord(offset_x, radius_y, radius_x)
    by_row = (offset_x - row_chord) * row_cosine
    by_column = (offset_y.abs() - column_chord) * column_cosine
    box = torch.maximum(offset_x - radius_x, offset_y.abs() - radius_y)
    scale = torch.sqrt((offset_x / radius_x).square() + (offset_y / radius_y).square())
    gap = (scale - 1.0) * torch.minimum(torch.as_tensor(radius_x), torch.as_tensor(radius_y))
    return torch.maximum(torch.maximum(by_row, by_column), torch.maximum(box, gap))


class _Canvas:
    """Image and optional mask channels of one chunk, or of a window of it.

    `output` is `[n, 3, h, w]`, or `[n, 5, h, w]` with the skin and hair masks last. Parts
    are painted back to front.
    """

    def __init__(self, output: torch.Tensor, pixel: float) -> None:
        self.output = output
        self.image = output[:, :3]
        self.skin = output[:, 3] if output.shape[1] == 5 else None
        self.hair = output[:, 4] if output.shape[1] == 5 else None
        self.pixel = pixel

    def window(self, rows: slice, cols: slice) -> _Canvas:
        """Return a canvas that paints into a rectangle of this one."""
        return _Canvas(self.output[:, :, rows, cols], self.pixel)

    def paint(
        self,
        colour: torch.Tensor,
        distance: torch.Tensor,
        kind: str | None = None,
        opacity: float = 1.0,
    ) -> None:
        """Composite `colour` over the shape whose signed distance is `distance`.

        `colour` is `[n, 3, 1, 1]` or `[n, 3, h, w]`. The masks are updated for a part of
        `kind`: "skin", "hair", or None for anything else. A translucent part (opacity < 1),
        such as the nose shadow, still hides the skin in the mask.
        """
        coverage = _coverage(distance, self.pixel)
        blend_weight = coverage * opacity if opacity != 1.0 else coverage
        self.paint_coverage(colour, blend_weight, kind, coverage)

    def paint_coverage(
        self,
        colour: torch.Tensor,
        coverage: torch.Tensor,
        kind: str | None = None,
        mask_coverage: torch.Tensor | None = None,
    ) -> None:
        """Composite `colour` with a given coverage `[n, h, w]`, as `paint` does."""
        self.image.lerp_(colour, coverage.unsqueeze(1))
        if self.skin is None:
            return
        mask_coverage = coverage if mask_coverage is None else mask_coverage
        if kind == "skin":
            self.skin.lerp_(_ONE, mask_coverage)
            self.hair.mul_(1.0 - mask_coverage)
        elif kind == "hair":
            self.hair.lerp_(_ONE, mask_coverage)
            self.skin.mul_(1.0 - mask_coverage)
        else:
            self.skin.mul_(1.0 - mask_coverage)
            self.hair.mul_(1.0 - mask_coverage)


_ONE = torch.tensor(1.0)


def _feature_window(size: int) -> tuple[slice, slice]:
    """Return the rows and columns that can contain eyes, brows, nose or mouth.

    For any identity, features extend over |x| <= 0.31 and HEAD_CENTRE_Y - 0.19 <= y <=
    HEAD_CENTRE_Y + 0.36 in the upright frame. The bounds below add a margin and the largest
    shift.
    """

    def to_pixel(coordinate: float) -> float:
        return (coordinate + 1.0) * size / 2.0 - 0.5

    low_x = math.floor(to_pixel(-0.40 - MAX_SHIFT))
    high_x = math.ceil(to_pixel(0.40 + MAX_SHIFT)) + 1
    low_y = math.floor(to_pixel(HEAD_CENTRE_Y - 0.24 - MAX_SHIFT))
    high_y = math.ceil(to_pixel(HEAD_CENTRE_Y + 0.42 + MAX_SHIFT)) + 1
    return slice(max(low_y, 0), min(high_y, size)), slice(max(low_x, 0), min(high_x, size))


@dataclass
class _Frame:
    """Per-sample geometry of one chunk, shared by the drawing steps.

    `x` `[n, 1, S]` and `y` `[n, S, 1]` are the coordinates of the pixel columns and rows in
    the upright, shifted frame. The other tensors are `[n, 1, 1]`, or `[n, 3, 1, 1]` for
    colours.
    """

    attributes: AvatarAttributes
    pixel: float
    coords: torch.Tensor  # [S] pixel centres in [-1, 1]
    x: torch.Tensor
    y: torch.Tensor
    half_width: torch.Tensor  # of the face
    half_height: torch.Tensor
    skin: torch.Tensor
    hair: torch.Tensor

    def column(self, name: str) -> torch.Tensor:
        """Return attribute `name` as `[n, 1, 1]`."""
        return getattr(self.attributes, name).float().view(-1, 1, 1)


def _render_chunk(attributes: AvatarAttributes, size: int, output: torch.Tensor) -> None:
    """Render one chunk into `output` `[n, 3 or 5, size, size]` (RGB, then optional masks)."""
    pixel = 2.0 / size
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) * pixel - 1.0
    canvas = _Canvas(output, pixel)
    if canvas.skin is not None:
        canvas.skin.zero_()
        canvas.hair.zero_()

    def column(value: torch.Tensor) -> torch.Tensor:
        return value.float().view(-1, 1, 1)

    hair_rgb = _lerp_rgb(_HAIR_ASH_RGB, _HAIR_COPPER_RGB, column(attributes.hair_hue))
    darkness = column(attributes.hair_darkness).unsqueeze(1)
    frame = _Frame(
        attributes=attributes,
        pixel=pixel,
        coords=coords,
        x=coords.view(1, 1, size) - (column(attributes.shift_x) - 0.5) * 2.0 * MAX_SHIFT,
        y=coords.view(1, size, 1) - (column(attributes.shift_y) - 0.5) * 2.0 * MAX_SHIFT,
        half_width=column(0.34 + 0.10 * attributes.face_width),
        half_height=column(0.44 + 0.10 * attributes.face_height),
        skin=skin_rgb(attributes.skin_tone)[:, :, None, None],
        hair=hair_rgb + (_rgb(_HAIR_BLACK_RGB) - hair_rgb) * darkness,
    )

    _draw_background(canvas, frame)
    skull, hair_texture = _draw_back_hair(canvas, frame)
    _draw_face(canvas, frame)
    rows, cols = _feature_window(size)
    features = canvas.window(rows, cols)
    brow_top = _draw_features(features, frame, frame.x[:, :, cols], frame.y[:, rows])
    _draw_front_hair(canvas, frame, skull, hair_texture, brow_top)

    # Roll the samples that are not upright; skipping the others keeps their pixels exact.
    tilted = attributes.tilt != 0.5
    if bool(tilted.any()):
        angle = torch.deg2rad((attributes.tilt[tilted].float() - 0.5) * 2.0 * MAX_TILT_DEG)
        output[tilted] = _roll(output[tilted], angle, coords)

    # Lighting: overall brightness and a horizontal gradient from the key light's side.
    gain = 0.92 + 0.16 * column(attributes.light_intensity)
    direction = 2.0 * column(attributes.light_direction) - 1.0
    gain = gain * (1.0 + 0.08 * direction * coords.view(1, 1, size))
    canvas.image.mul_(gain.unsqueeze(1)).clamp_(0.0, 1.0)


def _draw_background(canvas: _Canvas, frame: _Frame) -> None:
    """Paint the background (a hue and value, lighter at the top) and the clothes."""
    attributes = frame.attributes
    hsv = torch.stack(
        [
            attributes.background_hue.float() * 2.0 * math.pi,
            torch.full_like(attributes.background_hue, 0.3, dtype=torch.float32),
            0.45 + 0.5 * attributes.background_value.float(),
        ],
        dim=1,
    )[:, :, None, None]
    background = kornia.color.hsv_to_rgb(hsv)  # [n, 3, 1, 1]
    canvas.image.copy_(background * (1.04 - 0.04 * frame.coords.view(1, 1, -1, 1)))
    canvas.paint(_rgb(_CLOTHES_RGB), _ellipse_distance(frame.x.abs(), frame.y - 1.3, 0.95, 0.58))


def _draw_back_hair(canvas: _Canvas, frame: _Frame) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint the hair behind the face: the cap around the skull, the hanging part, braids.

    Return the skull outline's signed distance `[n, S, S]` and the textured hair colour
    `[n, 3, S, S]`, which the front hair reuses.
    """
    x, y, abs_x = frame.x, frame.y, frame.x.abs()
    half_width, half_height = frame.half_width, frame.half_height
    length = frame.column("hair_length")
    curl = frame.column("hair_curl")
    braids = frame.column("hair_braids")
    volume = frame.column("hair_volume")

    braided = _smoothstep(braids)
    # Curly, full, unbraided hair puffs up into an afro; braided hair lies flat on the scalp.
    puff = _smoothstep(volume) * _smoothstep(curl) * (1.0 - braided)  # 0 ... 1
    margin = 0.035 + 0.08 * volume + 0.30 * puff
    margin = margin + (0.025 - margin) * braided
    # Lower end of the hair, piecewise linear in length: above the ears at 0, mouth level at
    # 0.3, below the chin at 0.6, past the bottom of the image at 1.
    bottom = HEAD_CENTRE_Y - 0.2 + length
    bottom = bottom + 0.667 * (length - 0.3).clamp_min(0.0) + 0.083 * (length - 0.6).clamp_min(0.0)
    # The cap around the skull ends at the same height, but at ear level at the latest. Below
    # that only the hanging part continues. An afro rounds off below the jaw at any length.
    ear_level = torch.tensor(HEAD_CENTRE_Y + 0.05)
    cap_bottom = torch.maximum(torch.minimum(bottom, ear_level), HEAD_CENTRE_Y - 0.2 + 0.75 * puff)

    # Outlines, made lobed by curl: the perturbation `wobble` is [n, S, S].
    bumps = 0.5 * (torch.sin(_BUMP_FREQ * x) + torch.sin(_BUMP_FREQ * y))
    wobble = (0.06 * curl + 0.02 * puff) * bumps
    skull = _ellipse_distance(
        abs_x, y - (HEAD_CENTRE_Y - 0.02), half_width + margin, half_height + margin + 0.02
    )
    skull = skull - wobble
    cap = torch.maximum(skull, y - cap_bottom - wobble)
    hanging = torch.maximum(y - bottom, HEAD_CENTRE_Y - y)  # [n, S, 1]
    hanging = torch.maximum(abs_x - (half_width + margin), hanging) - wobble
    cap_coverage = _coverage(cap, frame.pixel)
    loose_coverage = _coverage(torch.minimum(cap, hanging), frame.pixel)
    back_coverage = torch.maximum(cap_coverage, loose_coverage * (1.0 - braided))

    # Texture: vertical strands for straight hair, wavy patches for curls, and cornrow stripes
    # on the scalp whose contrast grows with `hair_braids` from 0 on.
    streaks = 0.5 + 0.5 * torch.sin(_STREAK_FREQ * x)
    wave_x = _SPOT_FREQ * x + 1.0 + 1.5 * torch.sin(0.5 * _SPOT_FREQ * y)  # [n, S, S]
    wave_y = _SPOT_FREQ * y + 1.5 * torch.sin(0.5 * _SPOT_FREQ * x + 2.0)
    spots = (0.5 + 0.5 * torch.sin(wave_x)) * (0.5 + 0.5 * torch.sin(wave_y))
    cornrows = torch.sin(_CORNROW_FREQ * x).clamp_min(0.0).square()
    texture = 1.0 - 0.18 * (1.0 - curl) * streaks - 0.4 * curl * spots
    texture = texture * (1.0 - 0.5 * braids * cornrows * cap_coverage)
    # A grey sheen between the curl patches keeps them visible on black hair.
    sheen = 0.12 * curl * (1.0 - spots)
    hair_texture = frame.hair * texture.unsqueeze(1) + sheen.unsqueeze(1)  # [n, 3, S, S]
    canvas.paint_coverage(0.85 * hair_texture, back_coverage, "hair")  # in the head's shadow

    # Braids: two lobed strands on each side, from the temples down to `bottom`, with a
    # chevron texture. Each lobe narrows to 65% of its width at the joints.
    braid_top = HEAD_CENTRE_Y - 0.18
    phase = (y - braid_top) / _BRAID_PERIOD  # [n, S, 1]
    lobe_half_width = 0.045 * (0.65 + 0.35 * torch.sin(math.pi * phase).abs())
    lobe_half_width = lobe_half_width * (0.8 + 0.2 * braids)
    inner_strand = (abs_x - (half_width + 0.04)).abs()
    outer_strand = (abs_x - (half_width + 0.15)).abs()
    strand_offset = torch.minimum(inner_strand, outer_strand)  # [n, 1, S]
    braid = torch.maximum(y - bottom, braid_top - y)
    braid = torch.maximum(strand_offset - lobe_half_width, braid)
    chevron_phase = torch.frac(phase + 2.0 + strand_offset / 0.09)
    chevron = 1.0 - 0.4 * (2.0 * chevron_phase - 1.0).abs()
    braid_coverage = _coverage(braid, frame.pixel) * braided
    canvas.paint_coverage(0.85 * frame.hair * chevron.unsqueeze(1), braid_coverage, "hair")
    return skull, hair_texture


def _draw_face(canvas: _Canvas, frame: _Frame) -> None:
    """Paint the neck and the face outline with its shading."""
    abs_x, y = frame.x.abs(), frame.y
    half_width, half_height = frame.half_width, frame.half_height

    neck = torch.maximum(abs_x - 0.42 * half_width, HEAD_CENTRE_Y + 0.5 * half_height - y)
    canvas.paint(0.8 * frame.skin, neck, "skin")  # in the chin's shadow

    # An ellipse above the centre line and a superellipse below it, whose exponent goes from
    # 1.6 (pointed chin) to 3.6 (square jaw). Distance estimate as in `_ellipse_distance`.
    face_y = y - HEAD_CENTRE_Y  # [n, S, 1]
    jaw_exponent = 1.6 + 2.0 * frame.column("jaw")
    row_exponent = torch.where(face_y > 0, jaw_exponent, torch.full_like(face_y, 2.0))
    row_chord, row_cosine = _half_chord(face_y, half_width, half_height, row_exponent)
    by_row = (abs_x - row_chord) * row_cosine
    lower_chord, lower_cosine = _half_chord(abs_x, half_height, half_width, jaw_exponent)
    upper_chord, upper_cosine = _half_chord(abs_x, half_height, half_width)
    by_column = torch.maximum(
        (face_y - lower_chord) * lower_cosine, (-face_y - upper_chord) * upper_cosine
    )
    box = torch.maximum(abs_x - half_width, face_y.abs() - half_height)
    # The gap to the scaled outline through the pixel. 0.7 times the smaller radius is at
    # most the distance from the centre to the outline for every exponent from 1.6 to 3.6.
    scale = (abs_x / half_width) ** row_exponent + (face_y.abs() / half_height) ** row_exponent
    gap = (scale ** (1.0 / row_exponent) - 1.0) * 0.7 * torch.minimum(half_width, half_height)
    face = torch.maximum(torch.maximum(by_row, by_column), torch.maximum(box, gap))

    radius_squared = (frame.x / half_width).square() + (face_y / half_height).square()
    shading = 1.0 - 0.1 * radius_squared.clamp_max(1.0)  # darker towards the edge
    canvas.paint(frame.skin * shading.unsqueeze(1), face, "skin")


def _draw_front_hair(canvas, frame: _Frame, skull, hair_texture, brow_top) -> None:
    """Paint the hair in front of the face: the cap above the hairline and the fringe.

    The hairline dips towards the temples. The fringe reaches from the hairline down to just
    above the brows at `hair_fringe` 1. Its lower edge is jagged (strand tips) for straight
    hair and lobed for curls.
    """
    x, y = frame.x, frame.y
    curl = frame.column("hair_curl")
    half_height = frame.half_height
    temple_drop = 0.30 * half_height * (x / frame.half_width).square()  # [n, 1, S]
    hairline = HEAD_CENTRE_Y - 0.7 * half_height + temple_drop
    fringe_bottom = hairline + frame.column("hair_fringe") * (brow_top - 0.015 - hairline)
    tips = 0.012 * (1.0 - curl) * (2.0 * torch.frac(x / 0.05 + 100.0) - 1.0).abs()  # [n, 1, S]
    bumps = 0.5 * (torch.sin(_BUMP_FREQ * x) + torch.sin(_BUMP_FREQ * y))
    front = torch.maximum(skull, y - (fringe_bottom + tips) - 0.03 * curl * bumps)
    canvas.paint(hair_texture, front, "hair")


def _draw_features(canvas: _Canvas, frame: _Frame, x: torch.Tensor, y: torch.Tensor):
    """Paint eyes, brows, nose and mouth, and return the y of the brows' top edge `[n, 1, 1]`.

    `canvas` is a window of the image, and `x` and `y` are its column and row coordinates.
    """
    skin, column = frame.skin, frame.column
    abs_x = x.abs()  # the face is symmetric, so each eye and brow is drawn for both sides
    eye_y = HEAD_CENTRE_Y - 0.06 * frame.half_height
    eye_radius_x = 0.06 + 0.035 * column("eye_size")
    eye_radius_y = 0.5 * eye_radius_x
    eye_x = 0.13 + 0.07 * column("eye_spacing")
    eye_offset_x = (abs_x - eye_x).abs()
    eye_offset_y = y - eye_y

    sclera = _ellipse_distance(eye_offset_x, eye_offset_y, eye_radius_x, eye_radius_y)
    canvas.paint(_rgb(_SCLERA_RGB), sclera)
    eye_colour = column("eye_colour")
    iris_rgb = torch.where(
        (eye_colour < 0.5).unsqueeze(1),
        _lerp_rgb(_IRIS_RGB[0], _IRIS_RGB[1], (2.0 * eye_colour).clamp_max(1.0)),
        _lerp_rgb(_IRIS_RGB[1], _IRIS_RGB[2], (2.0 * eye_colour - 1.0).clamp_min(0.0)),
    )
    iris_radius = 0.9 * eye_radius_y
    iris = _ellipse_distance(eye_offset_x, eye_offset_y, iris_radius, iris_radius)
    canvas.paint(iris_rgb, torch.maximum(iris, sclera))
    pupil_radius = 0.4 * iris_radius
    pupil = _ellipse_distance(eye_offset_x, eye_offset_y, pupil_radius, pupil_radius)
    canvas.paint(_rgb(_PUPIL_RGB), pupil)

    # Brows: arched bars above the eyes, darker than the hair.
    brow_length = 1.15 * eye_radius_x
    brow_y = eye_y - eye_radius_y - 0.05
    brow_half_thickness = 0.012 + 0.022 * column("brows")
    arch = brow_y - 0.02 * (1.0 - (eye_offset_x / brow_length).square())  # [n, 1, S]
    brow = torch.maximum((y - arch).abs() - brow_half_thickness, eye_offset_x - brow_length)
    canvas.paint(frame.hair + (_rgb(_HAIR_BLACK_RGB) - frame.hair) * 0.4, brow)

    # Nose: a shadow along the right of the bridge and a nostril shadow under the tip.
    nose = column("nose")
    tip_y = eye_y + 0.13 + 0.08 * nose
    bridge = torch.maximum((x - 0.025).abs() - 0.008, torch.maximum(eye_y + 0.05 - y, y - tip_y))
    canvas.paint(0.85 * skin, bridge, None, opacity=0.5)
    nostril = _ellipse_distance(abs_x, y - tip_y, 0.03 + 0.015 * nose, 0.018)
    canvas.paint(0.7 * skin, nostril, None, opacity=0.7)

    # Mouth: lips tinted from the skin towards red, and the dark line between them.
    mouth_y = HEAD_CENTRE_Y + 0.6 * frame.half_height
    mouth_half_width = 0.08 + 0.07 * column("mouth")
    lips = _ellipse_distance(abs_x, y - mouth_y, mouth_half_width, 0.026)
    canvas.paint(0.85 * (skin + (_rgb(_LIP_RGB) - skin) * 0.35), lips)
    line = _ellipse_distance(abs_x, y - mouth_y, 0.9 * mouth_half_width, 0.007)
    canvas.paint(0.45 * skin, line)

    return brow_y - 0.02 - brow_half_thickness


def _roll(output: torch.Tensor, angle: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Rotate every channel of `output` `[n, C, S, S]` about the image centre.

    `angle` `[n]` is in radians, clockwise on screen. Resampling is bilinear, and pixels
    beyond the edge repeat the edge. This is a gather written out by hand because
    `torch.nn.functional.grid_sample` took about ten times as long for 32 images of 64 px on
    a 2-core CPU (torch 2.14).
    """
    n, num_channels, size, _ = output.shape
    cos = torch.cos(angle).view(n, 1, 1)
    sin = torch.sin(angle).view(n, 1, 1)
    image_x = coords.view(1, 1, size)
    image_y = coords.view(1, size, 1)
    # Each output pixel samples the upright image at the position rotated back by `angle`,
    # converted from normalised coordinates to fractional pixel indices.
    source_x = ((cos * image_x + sin * image_y + 1.0) * size / 2.0 - 0.5).clamp(0.0, size - 1.001)
    source_y = ((cos * image_y - sin * image_x + 1.0) * size / 2.0 - 0.5).clamp(0.0, size - 1.001)
    x0 = source_x.floor()
    y0 = source_y.floor()
    weight_x = (source_x - x0).unsqueeze(1)
    weight_y = (source_y - y0).unsqueeze(1)
    index = (y0 * size + x0).long().view(n, 1, size * size).expand(n, num_channels, size * size)
    flat = output.reshape(n, num_channels, size * size)

    def sample(offset: int) -> torch.Tensor:
        return torch.gather(flat, 2, index + offset).view(n, num_channels, size, size)

    top = torch.lerp(sample(0), sample(1), weight_x)
    bottom = torch.lerp(sample(size), sample(size + 1), weight_x)
    return torch.lerp(top, bottom, weight_y)
