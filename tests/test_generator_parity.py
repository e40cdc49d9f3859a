"""Parity of the generator with the reference implementations' own outputs, and the ws contract."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import ConfigError, ShapeError
from harness.generator import load_generator

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TOLERANCE = 1e-4

# fixture checkpoint, expected outputs, name of the mapped latent in the expected file
CASES = {
    "rosinality": ("rosinality_s32_convert.pt", "rosinality_s32_convert_expected.npz", "w"),
    "nvidia": ("nvidia_ada_r32_state.pt", "nvidia_ada_r32_expected.npz", "ws"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    checkpoint, expected, latent_key = CASES[request.param]
    generator = load_generator(FIXTURES / checkpoint)
    arrays = dict(np.load(FIXTURES / expected))
    return request.param, generator, arrays, latent_key


def max_abs_diff(actual: torch.Tensor, expected: np.ndarray) -> float:
    assert tuple(actual.shape) == expected.shape
    return (actual.detach().cpu() - torch.from_numpy(expected)).abs().max().item()


def test_num_ws_matches_reference(case):
    _, generator, arrays, _ = case
    assert generator.num_ws == int(arrays["num_ws"])
    assert generator.resolution == 32
    assert generator.z_dim == 64
    assert generator.w_dim == 64


def test_mapping_matches_reference(case):
    _, generator, arrays, latent_key = case
    ws = generator.mapping(torch.from_numpy(arrays["z"]))
    assert ws.shape == (4, generator.num_ws, generator.w_dim)
    expected = arrays[latent_key]
    if expected.ndim == 2:  # rosinality stores one w per sample
        expected = np.repeat(expected[:, None], generator.num_ws, axis=1)
    assert max_abs_diff(ws, expected) < TOLERANCE


def test_w_avg_matches_reference(case):
    name, generator, arrays, _ = case
    expected = arrays["w_avg"] if name == "nvidia" else arrays["mean_latent"][0]
    assert max_abs_diff(generator.w_avg, expected) < TOLERANCE
    assert generator.source.w_avg_estimated is False


@pytest.mark.parametrize("implementation", ["shared", "grouped"])
def test_images_match_reference(case, implementation):
    _, generator, arrays, _ = case
    generator.synthesis.modconv_implementation = implementation
    try:
        z = torch.from_numpy(arrays["z"])
        with torch.no_grad():
            img = generator.synthesis(generator.mapping(z))
            img_trunc = generator.synthesis(generator.mapping(z, truncation_psi=0.7))
            img_wplus = generator.synthesis(torch.from_numpy(arrays["wplus"]))
    finally:
        generator.synthesis.modconv_implementation = "shared"
    assert max_abs_diff(img, arrays["img"]) < TOLERANCE
    assert max_abs_diff(img_trunc, arrays["img_trunc07"]) < TOLERANCE
    assert max_abs_diff(img_wplus, arrays["img_wplus"]) < TOLERANCE


def test_forward_equals_mapping_then_synthesis(case):
    _, generator, arrays, _ = case
    z = torch.from_numpy(arrays["z"])
    with torch.no_grad():
        img = generator(z, truncation_psi=0.7)
    assert max_abs_diff(img, arrays["img_trunc07"]) < TOLERANCE


def test_truncation_cutoff_limits_layers(case):
    _, generator, arrays, _ = case
    z = torch.from_numpy(arrays["z"])
    full = generator.mapping(z)
    cut = generator.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.equal(cut[:, 3:], full[:, 3:])
    expected = generator.w_avg + 0.5 * (full[:, :3] - generator.w_avg)
    assert (cut[:, :3] - expected).abs().max().item() < 1e-6


def test_single_w_broadcasts_to_all_layers(case):
    _, generator, arrays, _ = case
    ws = generator.mapping(torch.from_numpy(arrays["z"]))
    with torch.no_grad():
        from_w = generator.synthesis(ws[:, 0])
        from_ws = generator.synthesis(ws)
    assert torch.equal(from_w, from_ws)


def test_wrong_ws_length_names_both_lengths(case):
    _, generator, _, _ = case
    ws = torch.zeros(2, generator.num_ws + 2, generator.w_dim)
    with pytest.raises(ShapeError, match=rf"ws has {generator.num_ws + 2} layers.*takes {generator.num_ws}"):
        generator.synthesis(ws)


def test_wrong_w_dim_rejected(case):
    _, generator, _, _ = case
    with pytest.raises(ShapeError, match=r"ws has shape \[2, 8, 32\]"):
        generator.synthesis(torch.zeros(2, 8, 32))
    with pytest.raises(ShapeError, match=r"z has shape \[2, 10\]"):
        generator.mapping(torch.zeros(2, 10))


@pytest.mark.parametrize("noise_mode", ["const", "random", "none"])
def test_gradient_reaches_ws(case, noise_mode):
    _, generator, arrays, _ = case
    ws = torch.from_numpy(arrays["wplus"]).clone().requires_grad_(True)
    img = generator.synthesis(ws, noise_mode=noise_mode)
    img.square().mean().backward()
    assert ws.grad is not None
    assert torch.isfinite(ws.grad).all()
    # Every slot feeds a conv or ToRGB layer, so each gets a gradient.
    assert (ws.grad.abs().sum(dim=(0, 2)) > 0).all()
    assert all(param.grad is None for param in generator.parameters())


def test_gradient_matches_finite_difference(case):
    _, generator, arrays, _ = case
    # float64 and a small step keep the central difference away from leaky ReLU kinks and
    # rounding, so it agrees with autograd to many digits.
    generator64 = copy.deepcopy(generator).double()
    ws = torch.from_numpy(arrays["wplus"][:1]).double()
    rng = torch.Generator().manual_seed(1)
    direction = torch.randn(ws.shape, generator=rng, dtype=torch.float64)
    pixel_weights = torch.randn(1, 3, 32, 32, generator=rng, dtype=torch.float64)

    def loss(point: torch.Tensor) -> torch.Tensor:
        return (generator64.synthesis(point) * pixel_weights).sum()

    point = ws.clone().requires_grad_(True)
    loss(point).backward()
    analytic = (point.grad * direction).sum().item()
    step = 1e-6
    with torch.no_grad():
        numeric = (loss(ws + step * direction) - loss(ws - step * direction)).item() / (2 * step)
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize("noise_mode", ["const", "random", "none"])
def test_noise_modes(case, noise_mode):
    _, generator, arrays, _ = case
    ws = torch.from_numpy(arrays["wplus"])
    with torch.no_grad():
        first = generator.synthesis(ws, noise_mode=noise_mode)
        second = generator.synthesis(ws, noise_mode=noise_mode)
    assert first.shape == (4, 3, 32, 32)
    if noise_mode == "random":
        assert not torch.equal(first, second)
    else:
        assert torch.equal(first, second)


def test_noise_mode_none_differs_from_const(case):
    _, generator, arrays, _ = case
    ws = torch.from_numpy(arrays["wplus"])
    with torch.no_grad():
        const = generator.synthesis(ws, noise_mode="const")
        none = generator.synthesis(ws, noise_mode="none")
    # The fixtures' noise strengths were perturbed away from zero, so noise changes the image.
    assert (const - none).abs().max().item() > 1e-3


def test_unknown_noise_mode_rejected(case):
    _, generator, arrays, _ = case
    with pytest.raises(ConfigError, match="noise_mode 'fixed' is not one of const, random, none"):
        generator.synthesis(torch.from_numpy(arrays["wplus"]), noise_mode="fixed")


def test_sample_ws_reproducible(case):
    _, generator, _, _ = case
    first = generator.sample_ws(3, seed=7, truncation_psi=0.5)
    second = generator.sample_ws(3, seed=7, truncation_psi=0.5)
    other = generator.sample_ws(3, seed=8, truncation_psi=0.5)
    assert first.shape == (3, generator.num_ws, generator.w_dim)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, generator.mapping(z, truncation_psi=0.5))


def test_sampled_ws_editable_in_place(case):
    _, generator, _, _ = case
    ws = generator.sample_ws(2, seed=0)
    ws[:, 3:] += 1.0  # a W+ edit of the later slots only
    assert torch.equal(ws[:, 0], generator.sample_ws(2, seed=0)[:, 0])
    assert not torch.equal(ws[:, 3], generator.sample_ws(2, seed=0)[:, 3])
