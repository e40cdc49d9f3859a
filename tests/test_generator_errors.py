"""Bad inputs to the loader and its helpers: each a CheckpointError or ConfigError that names the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness.errors import CheckpointError, ConfigError
from harness.generator import convert_checkpoint, load_generator
from harness.generator.render import parse_seeds

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
ROSINALITY = FIXTURES / "rosinality_s32_convert.pt"
NVIDIA_STATE = FIXTURES / "nvidia_ada_r32_state.pt"


def rosinality_variant(tmp_path: Path, edit) -> Path:
    checkpoint = torch.load(ROSINALITY, weights_only=True)
    edit(checkpoint["g_ema"])
    path = tmp_path / "variant.pt"
    torch.save(checkpoint, path)
    return path


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"absent\.pt: no such file"):
        load_generator(tmp_path / "absent.pt")


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_generator(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty"):
        load_generator(path)


@pytest.mark.parametrize("content", [b"\x80", b"\x80\x04", b"PK", b"{}"], ids=["one_byte", "pickle_header", "zip_magic_start", "json"])
def test_tiny_file(tmp_path, content):
    path = tmp_path / "tiny.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_generator(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a generator checkpoint: it is neither"):
        load_generator(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_torch_file(tmp_path, fraction):
    data = ROSINALITY.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_generator(path)


def test_truncated_safetensors_file(tmp_path):
    converted = convert_checkpoint(ROSINALITY, tmp_path / "full.safetensors")
    data = converted.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_generator(path)


def test_safetensors_cut_inside_header(tmp_path):
    converted = convert_checkpoint(ROSINALITY, tmp_path / "full.safetensors")
    path = tmp_path / "cut.safetensors"
    path.write_bytes(converted.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="safetensors file is truncated or corrupt.*has only 5000") as caught:
        load_generator(path)
    assert "convert the original checkpoint again" in str(caught.value)
    assert "neither a torch.save file" not in str(caught.value)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_torch_message_is_short(tmp_path, fraction):
    data = ROSINALITY.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError) as caught:
        load_generator(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot read this torch checkpoint: the file is truncated or corrupt")
    assert "Errno" not in message
    assert "miniz" not in message
    assert message.endswith("download or copy it again")


def test_whole_module_message_is_clean(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError) as caught:
        load_generator(path)
    message = str(caught.value)
    assert "torch.nn.modules.linear.Linear: a whole nn.Module, not a state dict" in message
    assert "save a state dict instead" in message
    assert "\x1b" not in message
    assert "two options" not in message


def test_safetensors_without_latentgate_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="has no LatentGate generator metadata.*latentgate convert"):
        load_generator(path)


def test_safetensors_with_invalid_architecture(tmp_path):
    path = tmp_path / "bad_arch.safetensors"
    metadata = {
        "format": "latentgate-stylegan2",
        "format_version": "1",
        "architecture": '{"resolution": 32, "z_dim": 64, "w_dim": 64, "num_mapping_layers": 2, '
        '"channels": {"4": 64}, "conv_clamp": "none"}',
        "w_avg": "[]",
    }
    save_file({"synthesis.const": torch.zeros(64, 4, 4)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="invalid metadata: architecture 'conv_clamp' must be a number"):
        load_generator(path)


def test_unknown_key_named(tmp_path):
    def add_key(g_ema):
        g_ema["convs.0.conv.extra_scale"] = torch.ones(1)

    with pytest.raises(CheckpointError, match=r"unexpected keys: convs\.0\.conv\.extra_scale"):
        load_generator(rosinality_variant(tmp_path, add_key))


def test_missing_key_named(tmp_path):
    def drop_key(g_ema):
        del g_ema["convs.3.activate.bias"]
        del g_ema["to_rgbs.1.bias"]

    with pytest.raises(CheckpointError, match=r"missing keys: convs\.3\.activate\.bias, to_rgbs\.1\.bias"):
        load_generator(rosinality_variant(tmp_path, drop_key))


def test_shape_mismatch_names_both_shapes(tmp_path):
    def reshape(g_ema):
        g_ema["convs.3.conv.modulation.weight"] = torch.zeros(40, 64)

    with pytest.raises(
        CheckpointError,
        match=r"convs\.3\.conv\.modulation\.weight has shape \[40, 64\] but \[48, 64\] is expected",
    ):
        load_generator(rosinality_variant(tmp_path, reshape))


def test_all_problems_reported_at_once(tmp_path):
    def break_several(g_ema):
        g_ema["bonus"] = torch.zeros(1)
        del g_ema["conv1.noise.weight"]
        g_ema["to_rgb1.bias"] = torch.zeros(3)

    with pytest.raises(CheckpointError) as info:
        load_generator(rosinality_variant(tmp_path, break_several))
    message = str(info.value)
    assert "missing keys: conv1.noise.weight" in message
    assert "unexpected keys: bonus" in message
    assert "to_rgb1.bias has shape [3] but [1, 3, 1, 1] is expected" in message


def test_missing_key_needed_for_inference(tmp_path):
    def drop_input(g_ema):
        del g_ema["input.input"]

    with pytest.raises(CheckpointError, match="has no input.input, which is needed to infer the architecture"):
        load_generator(rosinality_variant(tmp_path, drop_input))


def test_latent_avg_of_wrong_length(tmp_path):
    checkpoint = torch.load(ROSINALITY, weights_only=True)
    checkpoint["latent_avg"] = torch.zeros(512)
    path = tmp_path / "bad_latent.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"latent_avg has shape \[512\] but \[64\] \(w_dim\) is expected"):
        load_generator(path)


def test_unrecognised_layout(tmp_path):
    path = tmp_path / "classifier.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"unrecognised checkpoint layout \(top-level keys: epoch, model\)"):
        load_generator(path)


def test_bare_tensor_file(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="contains a Tensor, not a checkpoint dict"):
        load_generator(path)


def test_nvidia_init_kwargs_contradicting_tensors(tmp_path):
    checkpoint = torch.load(NVIDIA_STATE, weights_only=True)
    checkpoint["init_kwargs"]["img_resolution"] = 64
    path = tmp_path / "inconsistent.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="img_resolution is 64 but the tensors give 32"):
        load_generator(path)


def test_nvidia_unsupported_architecture(tmp_path):
    checkpoint = torch.load(NVIDIA_STATE, weights_only=True)
    checkpoint["init_kwargs"]["synthesis_kwargs"]["architecture"] = "resnet"
    path = tmp_path / "resnet.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="synthesis architecture 'resnet' is not supported"):
        load_generator(path)


def test_stylegan3_rejected(tmp_path):
    checkpoint = torch.load(NVIDIA_STATE, weights_only=True)
    checkpoint["state_dict"]["synthesis.input.weight"] = torch.zeros(64, 4)
    path = tmp_path / "sg3.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="this is a StyleGAN3 generator"):
        load_generator(path)


def test_unavailable_device(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_generator(ROSINALITY, device="cuda")
    with pytest.raises(ConfigError, match="invalid device 'gpu0'"):
        load_generator(ROSINALITY, device="gpu0")


@pytest.mark.parametrize(
    "text, expected",
    [("0-7", list(range(8))), ("3", [3]), ("1,5,9-11", [1, 5, 9, 10, 11]), ("2, 2,1", [2, 1])],
)
def test_parse_seeds(text, expected):
    assert parse_seeds(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("7-3", "seed range '7-3' is reversed; write 3-7"),
        ("a", "invalid seed 'a'"),
        ("-1", "invalid seed '-1'"),
        ("", "invalid seed ''"),
        ("0-20000", "has 20001 seeds; at most 10000"),
    ],
)
def test_parse_seeds_rejects(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_seeds(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("7-3", "--seeds: seed range '7-3' is reversed"),
        ("0-100000000", "--seeds: seed range '0-100000000' has 100000001 seeds"),
        ("99999999999999999999", r"--seeds: seed 99999999999999999999 .* must lie in \[0, 2\*\*63\)"),
        ("1-99999999999999999999", r"--seeds: seed 99999999999999999999 .* must lie in \[0, 2\*\*63\)"),
        ("\u00b2", "invalid seed"),
    ],
)
def test_parse_seeds_messages_name_flag(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_seeds(text)


def test_parse_seeds_accepts_largest_seed():
    assert parse_seeds(str(2**63 - 1)) == [2**63 - 1]


@pytest.mark.parametrize("psi", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_truncation_psi_rejected(psi):
    generator = load_generator(ROSINALITY)
    with pytest.raises(ConfigError, match=f"truncation_psi must be a finite number, got {psi}"):
        generator.sample_ws(2, 0, psi)
    z = generator.sample_z(2, 0)
    with pytest.raises(ConfigError, match="truncation_psi must be a finite number"):
        generator.mapping(z, truncation_psi=psi)
    with pytest.raises(ConfigError, match="truncation_psi must be a finite number"):
        generator(z, truncation_psi=psi)

