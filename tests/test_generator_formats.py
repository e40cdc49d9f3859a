"""Checkpoint formats: detection by content, round trips, inferred architectures, optional keys."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness.errors import ConfigError
from harness.generator import (
    Architecture,
    build_generator,
    convert_checkpoint,
    load_generator,
    make_architecture,
    save_rosinality_checkpoint,
)
from harness.generator import nvidia
from harness.generator.network import SynthesisLayer

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
ROSINALITY = FIXTURES / "rosinality_s32_convert.pt"
ROSINALITY_EXPECTED = FIXTURES / "rosinality_s32_convert_expected.npz"
NVIDIA_STATE = FIXTURES / "nvidia_ada_r32_state.pt"
NVIDIA_EXPECTED = FIXTURES / "nvidia_ada_r32_expected.npz"
TOLERANCE = 1e-4


def render(generator, seed: int = 3, num_samples: int = 2, truncation_psi: float = 0.8) -> torch.Tensor:
    with torch.no_grad():
        return generator.synthesis(generator.sample_ws(num_samples, seed, truncation_psi))


def perturbed(generator):
    """Give biases and noise strengths non-zero values, as a trained generator has."""
    rng = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                param.add_(0.1 * torch.randn(param.shape, generator=rng))
        generator.w_avg.copy_(0.1 * torch.randn(generator.w_dim, generator=rng))
    return generator


def small_rosinality_architecture(channels: dict[int, int]) -> Architecture:
    return Architecture(
        resolution=max(channels),
        z_dim=32,
        w_dim=32,
        num_mapping_layers=3,
        mapping_hidden_dim=32,
        channels=channels,
    )


@pytest.mark.parametrize("fixture", [ROSINALITY, NVIDIA_STATE], ids=["rosinality", "nvidia"])
def test_safetensors_round_trip_identical(tmp_path, fixture):
    original = load_generator(fixture)
    converted = convert_checkpoint(fixture, tmp_path / "generator.safetensors")
    reloaded = load_generator(converted)
    assert reloaded.source.format == "safetensors"
    assert reloaded.architecture == original.architecture
    assert torch.equal(reloaded.w_avg, original.w_avg)
    assert torch.equal(render(reloaded), render(original))
    for key, value in original.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_safetensors_metadata_holds_architecture_and_w_avg(tmp_path):
    original = load_generator(ROSINALITY)
    path = convert_checkpoint(ROSINALITY, tmp_path / "generator.safetensors")
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
        keys = set(file.keys())
    assert set(metadata) == {"latentgate"}
    record = json.loads(metadata["latentgate"])
    assert record["format"] == "latentgate-stylegan2"
    assert record["format_version"] == 2
    assert record["architecture"] == original.architecture.to_dict()
    assert torch.equal(torch.tensor(record["w_avg"]), original.w_avg)
    assert record["source_format"] == "rosinality"
    assert record["source_sha256"] == hashlib.sha256(ROSINALITY.read_bytes()).hexdigest()
    assert "mapping.w_avg" not in keys
    assert "synthesis.blocks.3.conv1.noise_const" in keys


def test_conversion_is_byte_for_byte_repeatable(tmp_path):
    first = convert_checkpoint(ROSINALITY, tmp_path / "first" / "generator.safetensors")
    second = convert_checkpoint(ROSINALITY, tmp_path / "second" / "generator.safetensors")
    assert first.read_bytes() == second.read_bytes()


def test_conversion_metadata_is_canonical_json(tmp_path):
    # One process cannot show hash-map ordering between runs, so check the form that prevents it.
    path = convert_checkpoint(ROSINALITY, tmp_path / "generator.safetensors")
    with safe_open(str(path), framework="pt") as file:
        text = file.metadata()["latentgate"]
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_version_1_safetensors_still_read(tmp_path):
    original = load_generator(ROSINALITY)
    converted = convert_checkpoint(ROSINALITY, tmp_path / "v2.safetensors")
    with safe_open(str(converted), framework="pt") as file:
        tensors = {key: file.get_tensor(key) for key in file.keys()}
        record = json.loads(file.metadata()["latentgate"])
    legacy_metadata = {
        "format": "latentgate-stylegan2",
        "format_version": "1",
        "architecture": json.dumps(record["architecture"]),
        "w_avg": json.dumps(record["w_avg"]),
        "w_avg_estimated": "false",
        "noise_generated": "false",
        "source_format": "rosinality",
    }
    legacy = tmp_path / "v1.safetensors"
    save_file(tensors, str(legacy), metadata=legacy_metadata)
    reloaded = load_generator(legacy)
    assert reloaded.architecture == original.architecture
    assert torch.equal(reloaded.w_avg, original.w_avg)
    assert torch.equal(render(reloaded), render(original))


def test_converted_file_mode_follows_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = convert_checkpoint(ROSINALITY, tmp_path / "generator.safetensors")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_convert_refuses_to_overwrite(tmp_path):
    target = tmp_path / "generator.safetensors"
    convert_checkpoint(ROSINALITY, target)
    with pytest.raises(ConfigError, match="already exists; pass --force to overwrite it"):
        convert_checkpoint(NVIDIA_STATE, target)
    convert_checkpoint(NVIDIA_STATE, target, overwrite=True)
    assert load_generator(target).source.architecture["channels"]["16"] == 64


def test_convert_requires_safetensors_suffix(tmp_path):
    with pytest.raises(ConfigError, match=r"the output name must end in \.safetensors"):
        convert_checkpoint(ROSINALITY, tmp_path / "generator.pt")


def test_rosinality_writer_matches_fixture_layout(tmp_path):
    reference = torch.load(ROSINALITY, weights_only=True)
    arch = Architecture.from_dict(load_generator(ROSINALITY).architecture.to_dict())
    path = save_rosinality_checkpoint(build_generator(arch), tmp_path / "ours.pt")
    written = torch.load(path, weights_only=True)
    assert set(written) == {"g_ema", "latent_avg"}
    assert set(written["g_ema"]) == set(reference["g_ema"])
    for key, tensor in reference["g_ema"].items():
        assert written["g_ema"][key].shape == tensor.shape, key
    # Blur kernels are buffers with fixed values, so they must match exactly.
    assert torch.equal(written["g_ema"]["convs.0.conv.blur.kernel"], reference["g_ema"]["convs.0.conv.blur.kernel"])
    assert torch.equal(written["g_ema"]["to_rgbs.2.upsample.kernel"], reference["g_ema"]["to_rgbs.2.upsample.kernel"])


def test_rosinality_reload_of_fixture_identical(tmp_path):
    original = load_generator(ROSINALITY)
    path = save_rosinality_checkpoint(original, tmp_path / "again.pt")
    reference = torch.load(ROSINALITY, weights_only=True)
    written = torch.load(path, weights_only=True)
    for key, tensor in reference["g_ema"].items():
        assert torch.equal(written["g_ema"][key], tensor), key
    assert torch.equal(written["latent_avg"], reference["latent_avg"])


@pytest.mark.parametrize(
    "channels",
    [
        {4: 32, 8: 32, 16: 32, 32: 16, 64: 8},  # the shape of rosinality's channel_multiplier=1
        {4: 32, 8: 32, 16: 32, 32: 32, 64: 16},  # channel_multiplier=2
        {4: 24, 8: 40, 16: 16, 32: 20, 64: 12},  # not a table either repository would build
    ],
    ids=["multiplier1", "multiplier2", "custom"],
)
def test_rosinality_round_trip_infers_channel_table(tmp_path, channels):
    generator = perturbed(build_generator(small_rosinality_architecture(channels)))
    path = save_rosinality_checkpoint(generator, tmp_path / "trained.pt")
    reloaded = load_generator(path)
    assert reloaded.architecture == generator.architecture
    assert reloaded.source.format == "rosinality"
    assert torch.equal(reloaded.w_avg, generator.w_avg)
    assert torch.equal(render(reloaded), render(generator))


def test_rosinality_writer_rejects_unrepresentable_architecture(tmp_path):
    arch = make_architecture(8, z_dim=16, w_dim=32, channel_max=8, num_mapping_layers=2)
    with pytest.raises(ConfigError, match=r"z_dim 16, w_dim 32 .* differ"):
        save_rosinality_checkpoint(build_generator(arch), tmp_path / "no.pt")


def test_rosinality_training_checkpoint_estimates_w_avg(tmp_path, caplog):
    reference = torch.load(ROSINALITY, weights_only=True)
    g_ema = reference["g_ema"]
    training = {
        "g": g_ema,
        "d": {"convs.0.0.weight": torch.zeros(8, 3, 1, 1)},
        "g_ema": g_ema,
        "g_optim": {"state": {}, "param_groups": []},
        "d_optim": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(size=32, latent=64, n_mlp=2, channel_multiplier=2, lr=0.002),
    }
    path = tmp_path / "090000.pt"
    torch.save(training, path)
    with caplog.at_level(logging.WARNING):
        generator = load_generator(path)
    assert generator.source.format == "rosinality-train"
    assert generator.source.w_avg_estimated is True
    assert "estimated w_avg from 10000 mapped samples" in caplog.text
    # Truncation does not touch psi=1 images, so they still match rosinality's output.
    expected = np.load(ROSINALITY_EXPECTED)
    with torch.no_grad():
        img = generator.synthesis(generator.mapping(torch.from_numpy(expected["z"])))
    assert (img - torch.from_numpy(expected["img"])).abs().max().item() < TOLERANCE
    # The estimate is the mean of w over the fixed seed's samples.
    z = torch.randn(10_000, 64, generator=torch.Generator().manual_seed(0))
    mean_w = generator.mapping.map_to_w(z).mean(dim=0)
    assert (generator.w_avg - mean_w).abs().max().item() < 1e-5


def test_missing_noise_buffers_are_generated(tmp_path, caplog):
    reference = torch.load(ROSINALITY, weights_only=True)
    g_ema = {key: value for key, value in reference["g_ema"].items() if not key.startswith("noises.")}
    path = tmp_path / "no_noise.pt"
    torch.save({"g_ema": g_ema, "latent_avg": reference["latent_avg"]}, path)
    with caplog.at_level(logging.WARNING):
        generator = load_generator(path)
    assert "has no noise buffers noises.noise_0" in caplog.text
    assert generator.source.noise_generated is True
    original = load_generator(ROSINALITY)
    ws = original.sample_ws(2, seed=1)
    with torch.no_grad():
        assert torch.equal(generator.synthesis(ws, noise_mode="none"), original.synthesis(ws, noise_mode="none"))
        assert not torch.equal(generator.synthesis(ws), original.synthesis(ws))
    again = load_generator(path)
    assert torch.equal(render(again), render(generator))  # the drawn noise is reproducible


def test_legacy_torch_format_loads(tmp_path):
    checkpoint = torch.load(ROSINALITY, weights_only=True)
    path = tmp_path / "pre_1_6.pt"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b"PK")
    generator = load_generator(path)
    assert generator.source.format == "rosinality"
    assert torch.equal(render(generator), render(load_generator(ROSINALITY)))


def test_format_detected_from_content_not_name(tmp_path):
    misnamed = tmp_path / "weights.pkl"
    shutil.copyfile(ROSINALITY, misnamed)
    assert load_generator(misnamed).source.format == "rosinality"
    converted = convert_checkpoint(NVIDIA_STATE, tmp_path / "g.safetensors")
    renamed = tmp_path / "g.pt"
    shutil.copyfile(converted, renamed)
    assert load_generator(renamed).source.format == "safetensors"


def test_torch_file_named_safetensors_loads(tmp_path):
    misnamed = tmp_path / "weights.safetensors"
    shutil.copyfile(ROSINALITY, misnamed)
    generator = load_generator(misnamed)
    assert generator.source.format == "rosinality"
    assert torch.equal(render(generator), render(load_generator(ROSINALITY)))
    converted = convert_checkpoint(misnamed, tmp_path / "converted.safetensors")
    assert load_generator(converted).source.format == "safetensors"


def test_source_record(tmp_path):
    generator = load_generator(NVIDIA_STATE)
    record = generator.source.to_dict()
    assert record["format"] == "nvidia-state"
    assert record["path"] == str(NVIDIA_STATE.resolve())
    assert record["sha256"] == hashlib.sha256(NVIDIA_STATE.read_bytes()).hexdigest()
    assert record["architecture"]["channels"] == {"4": 64, "8": 64, "16": 64, "32": 32}
    assert record["w_avg_estimated"] is False
    assert record["noise_generated"] is False


def nvidia_checkpoint(generator, init_kwargs: dict) -> dict:
    """Write our generator under NVIDIA's names, as a test of the inverse mapping."""
    state = generator.state_dict()
    state_dict = {m.source: m.to_source(state[m.target]).clone() for m in nvidia.key_mappings(generator.architecture)}
    state_dict["mapping.w_avg"] = generator.w_avg.clone()
    return {"init_kwargs": init_kwargs, "state_dict": state_dict}


def test_nvidia_state_round_trip_with_conv_clamp(tmp_path):
    arch = make_architecture(16, z_dim=24, w_dim=32, num_mapping_layers=3, channel_max=16, conv_clamp=0.5)
    generator = perturbed(build_generator(arch))
    init_kwargs = {
        "z_dim": 24,
        "c_dim": 0,
        "w_dim": 32,
        "img_resolution": 16,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 3},
        "synthesis_kwargs": {"channel_base": 32768, "channel_max": 16, "num_fp16_res": 2, "conv_clamp": 0.5},
    }
    path = tmp_path / "nvidia.pt"
    torch.save(nvidia_checkpoint(generator, init_kwargs), path)
    reloaded = load_generator(path)
    assert reloaded.architecture == arch
    assert torch.equal(render(reloaded), render(generator))

    outputs = []
    hooks = [
        module.register_forward_hook(lambda module, args, output: outputs.append(output))
        for module in reloaded.modules()
        if isinstance(module, SynthesisLayer)
    ]
    try:
        render(reloaded)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(outputs) == 5
    assert max(output.abs().max().item() for output in outputs) <= 0.5
    assert any(output.abs().max().item() == 0.5 for output in outputs)  # the clamp was active


def test_conv_clamp_keeps_gradients():
    arch = make_architecture(16, z_dim=16, w_dim=16, num_mapping_layers=2, channel_max=16, conv_clamp=0.5)
    generator = perturbed(build_generator(arch)).requires_grad_(False)
    ws = generator.sample_ws(2, seed=0).requires_grad_(True)
    generator.synthesis(ws).square().sum().backward()
    assert torch.isfinite(ws.grad).all()
    assert ws.grad.abs().sum().item() > 0


def test_nvidia_float16_tensors_run_in_float32(tmp_path):
    checkpoint = torch.load(NVIDIA_STATE, weights_only=True)
    checkpoint["state_dict"] = {
        key: value.half() if key.startswith("synthesis.b32.") else value
        for key, value in checkpoint["state_dict"].items()
    }
    checkpoint["init_kwargs"]["synthesis_kwargs"]["num_fp16_res"] = 1
    path = tmp_path / "fp16.pt"
    torch.save(checkpoint, path)
    generator = load_generator(path)
    assert all(param.dtype == torch.float32 for param in generator.parameters())
    expected = np.load(NVIDIA_EXPECTED)
    with torch.no_grad():
        img = generator.synthesis(torch.from_numpy(expected["wplus"]))
    assert img.dtype == torch.float32
    # float16 rounding of the last block's weights moves pixels by about 1e-3.
    assert (img - torch.from_numpy(expected["img_wplus"])).abs().max().item() < 2e-2


def test_build_generator_from_dict():
    arch = make_architecture(8, z_dim=16, w_dim=16, num_mapping_layers=2, channel_max=8)
    generator = build_generator(arch.to_dict())
    assert generator.architecture == arch
    assert generator.num_ws == 4
    assert all(param.requires_grad for param in generator.parameters())
    assert render(generator).shape == (2, 3, 8, 8)


def test_built_generator_trains():
    arch = make_architecture(8, z_dim=16, w_dim=16, num_mapping_layers=2, channel_max=8)
    generator = build_generator(arch)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    generator(z, noise_mode="random").square().mean().backward()
    missing = [name for name, param in generator.named_parameters() if param.grad is None]
    assert missing == []


def test_build_generator_rejects_bad_architecture():
    record = make_architecture(8, channel_max=8).to_dict()
    record["channels"] = {"4": 8}
    with pytest.raises(ConfigError, match=r"channels must list resolutions \[4, 8\], got \[4\]"):
        build_generator(record)
    with pytest.raises(ConfigError, match="unknown keys depth"):
        build_generator({**make_architecture(8).to_dict(), "depth": 3})
