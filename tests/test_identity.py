"""Tests of harness.identity: ArcFace embeddings on onnxruntime (metric) and onnx2torch (loss).

Known answers come from a small random ArcFace-style ONNX model with features that InsightFace's
own `ArcFaceONNX.get_feat` computed, from plain onnxruntime sessions on tiny ONNX graphs built
here, and from the geometry of the face crop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import socket
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from harness.errors import CheckpointError, ConfigError, ShapeError
from harness.identity import FaceCrop, cosine_similarity, load_identity_model
from harness.identity.preprocessing import crop_and_resize

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
ARCFACE_TINY = FIXTURES / "arcface_tiny.onnx"
TOLERANCE = 1e-4


# --- helpers ---------------------------------------------------------------------------------


def bgr_uint8_to_frames(images: np.ndarray) -> torch.Tensor:
    """Turn OpenCV-style `[N, H, W, 3]` BGR uint8 images into generator frames: RGB in [-1, 1]."""
    rgb = images[..., ::-1].copy()  # BGR -> RGB
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [N, 3, H, W]


def build_onnx_model(
    path: Path,
    input_shape: tuple = ("batch", 3, 112, 112),
    embedding_size: int = 16,
    *,
    normalise_in_graph: bool = False,
    output_rank: int = 2,
    input_type: int = TensorProto.FLOAT,
    num_outputs: int = 1,
    seed: int = 0,
) -> Path:
    """Write a small random ONNX model: optional Sub/Mul normalisation, Conv, Flatten, Gemm.

    With `normalise_in_graph`, the first nodes are named Sub_0 and Mul_1 and compute
    (x - 127.5) / 128, like an MXNet ArcFace export, for which InsightFace chooses mean 0, std 1.
    An input that is not 4-D skips the convolution.
    """
    rng = np.random.default_rng(seed)
    batch = input_shape[0]
    nodes = []
    initializers = []
    current = "data"

    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [current], ["data_float"], to=TensorProto.FLOAT, name="cast"))
        current = "data_float"
    if normalise_in_graph:
        initializers.append(numpy_helper.from_array(np.array(127.5, np.float32), "mean"))
        initializers.append(numpy_helper.from_array(np.array(1 / 128, np.float32), "scale"))
        nodes.append(helper.make_node("Sub", [current, "mean"], ["centred"], name="Sub_0"))
        nodes.append(helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="Mul_1"))
        current = "scaled"

    if len(input_shape) == 4:
        channels, height, width = input_shape[1:]
        conv_weight = rng.normal(0, 0.1, (4, channels, 8, 8)).astype(np.float32)
        initializers.append(numpy_helper.from_array(conv_weight, "conv_w"))
        nodes.append(
            helper.make_node(
                "Conv", [current, "conv_w"], ["conv"], kernel_shape=[8, 8], strides=[8, 8], name="conv"
            )
        )
        current = "conv"
        num_features = 4 * (height // 8) * (width // 8)
    else:
        num_features = int(np.prod(input_shape[1:]))
    nodes.append(helper.make_node("Flatten", [current], ["flat"], axis=1, name="flatten"))
    fc_weight = rng.normal(0, 0.05, (embedding_size, num_features)).astype(np.float32)
    initializers.append(numpy_helper.from_array(fc_weight, "fc_w"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w"], ["fc1"], transB=1, name="fc"))

    output_name = "fc1"
    output_shape = [batch, embedding_size]
    if output_rank == 4:
        initializers.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
        nodes.append(helper.make_node("Unsqueeze", ["fc1", "axes"], ["fc1_4d"], name="unsqueeze"))
        output_name = "fc1_4d"
        output_shape = [batch, embedding_size, 1, 1]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape)]
    if num_outputs == 2:
        nodes.append(helper.make_node("Identity", ["fc1"], ["fc1_copy"], name="copy"))
        outputs.append(helper.make_tensor_value_info("fc1_copy", TensorProto.FLOAT, [batch, embedding_size]))

    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("data", input_type, list(input_shape))],
        outputs,
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run_onnxruntime(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Run an ONNX file on one float32 input with a plain onnxruntime session."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return session.run(None, {input_name: inputs.astype(np.float32)})[0]


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "arcface_tiny_expected.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def arcface() -> object:
    return load_identity_model(ARCFACE_TINY)


@pytest.fixture(scope="module")
def arcface_cropped() -> object:
    # A square box: 48x48 pixels of a 64x64 frame, 120x120 of a 160x160 frame.
    return load_identity_model(ARCFACE_TINY, face_crop=(0.125, 0.125, 0.875, 0.875))


# --- 1. fixture parity ---------------------------------------------------------------------


def test_embed_matches_insightface_features(arcface, expected):
    frames = bgr_uint8_to_frames(expected["faces_bgr_uint8"])  # [6, 3, 112, 112]

    embeddings = arcface.embed(frames)

    assert embeddings.shape == expected["feats"].shape
    assert embeddings.dtype == np.float32
    assert np.abs(embeddings - expected["feats"]).max() < TOLERANCE


def test_embed_detects_bgr_mistake(arcface, expected):
    images = expected["faces_bgr_uint8"]
    # BGR channels fed as if they were RGB, the usual colour-order mistake.
    wrong = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    embeddings = arcface.embed(wrong)

    assert np.abs(embeddings - expected["feats"]).max() > 100 * TOLERANCE


def test_embed_accepts_frames_that_require_grad(arcface, expected):
    frames = bgr_uint8_to_frames(expected["faces_bgr_uint8"][:2]).requires_grad_(True)

    embeddings = arcface.embed(frames)

    assert np.abs(embeddings - expected["feats"][:2]).max() < TOLERANCE


def test_load_records_model_facts(arcface):
    info = arcface.info

    assert info.path == str(ARCFACE_TINY.resolve())
    assert info.sha256 == hashlib.sha256(ARCFACE_TINY.read_bytes()).hexdigest()
    assert info.input_size == 112
    assert info.embedding_size == 512
    assert info.input_mean == 127.5
    assert info.input_std == 127.5
    assert info.face_crop == (0.0, 0.0, 1.0, 1.0)
    assert info.onnxruntime_providers == ("CPUExecutionProvider",)
    assert info.as_dict()["sha256"] == info.sha256


def test_load_logs_chosen_normalisation(caplog):
    with caplog.at_level(logging.INFO, logger="harness.identity"):
        load_identity_model(ARCFACE_TINY)

    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert any("- 127.5) / 127.5" in message and "first nodes" in message for message in messages)


# --- 2. torch / onnxruntime parity and gradients ---------------------------------------------


def test_embed_torch_matches_fixture(arcface, expected):
    frames = bgr_uint8_to_frames(expected["faces_bgr_uint8"])

    with torch.no_grad():
        embeddings = arcface.embed_torch(frames)

    assert embeddings.shape == (6, 512)
    assert np.abs(embeddings.numpy() - expected["feats"]).max() < TOLERANCE
    assert np.abs(embeddings.numpy() - arcface.embed(frames)).max() < TOLERANCE


@pytest.mark.parametrize("size", [64, 160])
def test_embed_torch_matches_embed_with_crop(arcface_cropped, size):
    # 64 px frames upsample a 48 px crop; 160 px frames downsample a 120 px crop (antialiased).
    generator = torch.Generator().manual_seed(size)
    frames = torch.rand(3, 3, size, size, generator=generator) * 2 - 1

    metric = arcface_cropped.embed(frames)
    with torch.no_grad():
        loss_path = arcface_cropped.embed_torch(frames)

    assert metric.shape == (3, 512)
    assert np.abs(loss_path.numpy() - metric).max() < TOLERANCE


def test_embed_torch_gradient_reaches_crop_only(arcface_cropped):
    generator = torch.Generator().manual_seed(1)
    frames = (torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1).requires_grad_(True)

    embeddings = arcface_cropped.embed_torch(frames)
    loss = 1 - cosine_similarity(embeddings[0], embeddings[1])
    loss.backward()

    grad = frames.grad
    assert torch.isfinite(grad).all()
    # The crop covers rows and columns 8..56 of a 64 px frame; pixels outside cannot matter.
    assert grad[:, :, 8:56, 8:56].abs().sum() > 0
    assert grad[:, :, :8].abs().sum() == 0
    assert grad[:, :, 56:].abs().sum() == 0
    assert grad[:, :, :, :8].abs().sum() == 0
    assert grad[:, :, :, 56:].abs().sum() == 0


def test_torch_module_converted_once_and_frozen(arcface, expected):
    module = arcface.torch_module()

    assert arcface.torch_module() is module
    assert all(not parameter.requires_grad for parameter in module.parameters())
    assert not module.training

    module.train()
    assert not module.training
    assert not module.network.training
    frames = bgr_uint8_to_frames(expected["faces_bgr_uint8"][:3])
    with torch.no_grad():
        embeddings = arcface.embed_torch(frames)
    assert np.abs(embeddings.numpy() - expected["feats"][:3]).max() < TOLERANCE


def test_in_graph_normalisation_used_consistently(tmp_path):
    # First nodes named Sub_0 and Mul_1 make InsightFace feed raw 0..255 values (mean 0, std 1),
    # because the graph normalises them itself. Applying 127.5/127.5 on top would change the result.
    model_file = build_onnx_model(tmp_path / "mxnet_style.onnx", normalise_in_graph=True)
    generator = torch.Generator().manual_seed(2)
    frames = torch.rand(3, 3, 112, 112, generator=generator) * 2 - 1

    model = load_identity_model(model_file)
    reference = run_onnxruntime(model_file, ((frames + 1) * 127.5).numpy())

    assert model.info.input_mean == 0.0
    assert model.info.input_std == 1.0
    assert np.abs(model.embed(frames) - reference).max() < TOLERANCE
    with torch.no_grad():
        assert np.abs(model.embed_torch(frames).numpy() - reference).max() < TOLERANCE


@pytest.mark.parametrize("batch_size", [1, 2])
def test_fixed_batch_graph_embeds_any_count(tmp_path, batch_size):
    model_file = build_onnx_model(tmp_path / "fixed.onnx", input_shape=(batch_size, 3, 112, 112))
    generator = torch.Generator().manual_seed(3)
    frames = torch.rand(3, 3, 112, 112, generator=generator) * 2 - 1
    # InsightFace's guess for this graph is mean 127.5, std 127.5, which maps the frames back to
    # themselves, so each row's reference is the graph run on that frame repeated batch_size times.
    reference = np.stack(
        [run_onnxruntime(model_file, frame[None].repeat(batch_size, 1, 1, 1).numpy())[0] for frame in frames]
    )

    model = load_identity_model(model_file)

    assert model.fixed_batch_size == batch_size
    assert np.abs(model.embed(frames) - reference).max() < TOLERANCE
    with torch.no_grad():
        assert np.abs(model.embed_torch(frames).numpy() - reference).max() < TOLERANCE


# --- face crop -------------------------------------------------------------------------------


def test_face_crop_pixel_bounds():
    crop = FaceCrop(0.25, 0.5, 0.75, 1.0)

    assert crop.pixel_bounds(8, 8) == (4, 8, 2, 6)
    assert FaceCrop.parse(None).pixel_bounds(5, 7) == (0, 5, 0, 7)


def test_crop_of_model_size_passes_unchanged():
    frames = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)

    faces = crop_and_resize(frames, FaceCrop(0.25, 0.5, 0.75, 1.0), size=4)

    assert torch.equal(faces, frames[:, :, 4:8, 2:6])


def test_crop_resize_keeps_constant_image():
    frames = torch.full((1, 3, 30, 30), 0.25)

    faces = crop_and_resize(frames, FaceCrop(0.1, 0.1, 0.9, 0.9), size=112)

    assert faces.shape == (1, 3, 112, 112)
    assert torch.allclose(faces, torch.full_like(faces, 0.25), atol=1e-6)


def test_downsampling_is_antialiased():
    # Plain bilinear 4x downsampling samples between pixels 1 and 2, 5 and 6, ... of each row and
    # column, so it would miss a single bright pixel at (3, 3) entirely.
    frames = torch.zeros(1, 3, 16, 16)
    frames[:, :, 3, 3] = 1.0

    faces = crop_and_resize(frames, FaceCrop.parse(None), size=4)

    assert faces.shape == (1, 3, 4, 4)
    assert faces[0, 0, 0, 0] > 0.01


def test_non_square_crop_warns_once(caplog):
    frames = torch.zeros(1, 3, 20, 40)
    crop = FaceCrop(0.0, 0.0, 0.5, 0.5)  # 10 x 20 pixels

    with caplog.at_level(logging.WARNING, logger="harness.identity"):
        crop_and_resize(frames, crop, size=16)
        crop_and_resize(frames, crop, size=16)

    warnings = [record for record in caplog.records if "not square" in record.getMessage()]
    assert len(warnings) == 1


def test_crop_rounding_to_one_pixel_is_silent(caplog):
    frames = torch.zeros(1, 3, 64, 64)
    crop = FaceCrop(0.10, 0.105, 0.90, 0.905)  # square, but 51 x 52 pixels after rounding

    with caplog.at_level(logging.WARNING, logger="harness.identity"):
        faces = crop_and_resize(frames, crop, size=16)

    assert crop.pixel_bounds(64, 64) == (7, 58, 6, 58)
    assert faces.shape == (1, 3, 16, 16)
    assert not any("not square" in record.getMessage() for record in caplog.records)


def test_crop_without_whole_pixel_raises():
    model = load_identity_model(ARCFACE_TINY, face_crop=(0.0, 0.0, 0.01, 0.01))

    with pytest.raises(ShapeError, match=r"covers no whole pixel of a 32x32 frame"):
        model.embed(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize(
    "face_crop",
    [
        (0.5, 0.0, 0.4, 1.0),
        (0.0, 0.0, 1.0),
        (0.0, 0.0, 1.5, 1.0),
        (-0.1, 0.0, 1.0, 1.0),
        (0.0, 0.0, math.nan, 1.0),
        ("a", 0.0, 1.0, 1.0),
        "0,0,1,1",
    ],
)
def test_invalid_face_crop_raises(face_crop):
    with pytest.raises(ConfigError, match=r"face_crop .* is invalid"):
        load_identity_model(ARCFACE_TINY, face_crop=face_crop)


@pytest.mark.parametrize("shape", [(3, 112, 112), (2, 1, 112, 112), (0, 3, 112, 112)])
def test_frames_of_wrong_shape_raise(arcface, shape):
    frames = torch.zeros(shape)
    given = str(list(shape))

    with pytest.raises(ShapeError, match=r"expected \[N, 3, H, W\]") as raised:
        arcface.embed(frames)
    assert given in str(raised.value)
    with pytest.raises(ShapeError, match=r"expected \[N, 3, H, W\]"):
        arcface.embed_torch(frames)


def test_integer_frames_raise(arcface):
    with pytest.raises(ShapeError, match=r"dtype torch.uint8, expected a float dtype"):
        arcface.embed(torch.zeros(1, 3, 112, 112, dtype=torch.uint8))


# --- cosine similarity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "similarity"),
    [
        ([1.0, 0.0], [0.0, 2.0], 0.0),
        ([1.0, 2.0], [2.0, 4.0], 1.0),
        ([1.0, 0.0], [-3.0, 0.0], -1.0),
        ([3.0, 4.0], [4.0, 3.0], 24.0 / 25.0),
        ([0.0, 0.0], [1.0, 1.0], 0.0),
    ],
)
def test_cosine_similarity_known_values(a, b, similarity):
    numpy_result = cosine_similarity(np.array(a), np.array(b))
    torch_result = cosine_similarity(torch.tensor(a), torch.tensor(b))

    assert numpy_result == pytest.approx(similarity, abs=1e-12)
    assert torch_result.item() == pytest.approx(similarity, abs=1e-6)


def test_cosine_similarity_broadcasts_rows():
    reference = np.array([[1.0, 0.0]])
    others = np.array([[1.0, 0.0], [0.0, 5.0], [-2.0, 0.0]])

    result = cosine_similarity(reference, others)

    assert result.shape == (3,)
    assert np.allclose(result, [1.0, 0.0, -1.0])


def test_cosine_similarity_rejects_bad_inputs():
    with pytest.raises(ShapeError, match=r"\[2, 3\] and \[2, 4\]"):
        cosine_similarity(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="two numpy arrays or two torch tensors"):
        cosine_similarity(np.zeros(3), torch.zeros(3))


# --- 3. loading from folders, and errors -------------------------------------------------------


def test_folder_picks_recognition_model(tmp_path, expected):
    shutil.copy(ARCFACE_TINY, tmp_path / "w600k_tiny.onnx")
    build_onnx_model(tmp_path / "genderage.onnx", input_shape=("batch", 3, 96, 96), embedding_size=3)
    build_onnx_model(tmp_path / "small.onnx", input_shape=("batch", 3, 64, 64))
    (tmp_path / "broken.onnx").write_text("not a model\n")
    (tmp_path / "README.txt").write_text("notes\n")

    model = load_identity_model(tmp_path)

    assert model.info.path == str((tmp_path / "w600k_tiny.onnx").resolve())
    assert model.info.source == str(tmp_path)
    frames = bgr_uint8_to_frames(expected["faces_bgr_uint8"][:2])
    assert np.abs(model.embed(frames) - expected["feats"][:2]).max() < TOLERANCE


def test_folder_with_two_recognition_models_raises(tmp_path):
    shutil.copy(ARCFACE_TINY, tmp_path / "a.onnx")
    build_onnx_model(tmp_path / "b.onnx")

    with pytest.raises(CheckpointError, match=r"contains 2 recognition models \(a.onnx, b.onnx\)") as raised:
        load_identity_model(tmp_path)
    assert str(tmp_path) in str(raised.value)


def test_folder_without_recognition_model_raises(tmp_path):
    build_onnx_model(tmp_path / "genderage.onnx", input_shape=("batch", 3, 96, 96), embedding_size=3)
    build_onnx_model(tmp_path / "small.onnx", input_shape=("batch", 3, 64, 64))
    build_onnx_model(tmp_path / "vector.onnx", input_shape=("batch", 8))
    (tmp_path / "broken.onnx").write_text("not a model\n")

    with pytest.raises(CheckpointError, match="contains no recognition model") as raised:
        load_identity_model(tmp_path)
    message = str(raised.value)
    assert str(tmp_path) in message
    assert "genderage.onnx: genderage" in message
    assert "small.onnx: not routed to any model type" in message
    assert "vector.onnx: input [batch, 8], not an image model" in message
    assert "broken.onnx: not a valid ONNX file" in message


def test_folder_without_onnx_files_raises(tmp_path):
    nested = tmp_path / "antelope"
    nested.mkdir()
    shutil.copy(ARCFACE_TINY, nested / "glint.onnx")

    with pytest.raises(CheckpointError, match="contains no .onnx files") as raised:
        load_identity_model(tmp_path)
    assert "antelope/glint.onnx; pass that subfolder" in str(raised.value)


def write_package(folder: Path, model_name: str, sha256: str) -> None:
    """Write an InsightFace model-package manifest (version 2) with one recognition task."""
    (folder / "MODEL.LICENSE").write_text("test license\n")
    manifest = {
        "manifest_version": 2,
        "model_id": "tiny_package",
        "license": "MODEL.LICENSE",
        "tasks": {
            "recognition": {
                "file": model_name,
                "sha256": sha256,
                "preprocessing": {"mean": 127.5, "std": 127.5},
            }
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_package_manifest_selects_model(tmp_path, expected):
    # Two recognition models, which the manifest disambiguates.
    shutil.copy(ARCFACE_TINY, tmp_path / "recognition.onnx")
    build_onnx_model(tmp_path / "other.onnx")
    write_package(tmp_path, "recognition.onnx", hashlib.sha256(ARCFACE_TINY.read_bytes()).hexdigest())

    model = load_identity_model(tmp_path)

    assert model.info.path == str((tmp_path / "recognition.onnx").resolve())
    assert "manifest.json" in model.info.preprocessing_source
    frames = bgr_uint8_to_frames(expected["faces_bgr_uint8"][:2])
    assert np.abs(model.embed(frames) - expected["feats"][:2]).max() < TOLERANCE


def test_package_manifest_checksum_mismatch_raises(tmp_path):
    shutil.copy(ARCFACE_TINY, tmp_path / "recognition.onnx")
    write_package(tmp_path, "recognition.onnx", "0" * 64)

    with pytest.raises(CheckpointError, match=r"manifest.json cannot be used .*SHA-256 mismatch"):
        load_identity_model(tmp_path)


def test_file_in_package_warns(tmp_path, caplog):
    shutil.copy(ARCFACE_TINY, tmp_path / "recognition.onnx")
    write_package(tmp_path, "recognition.onnx", hashlib.sha256(ARCFACE_TINY.read_bytes()).hexdigest())

    with caplog.at_level(logging.WARNING, logger="harness.identity"):
        load_identity_model(tmp_path / "recognition.onnx")

    assert any("pass the folder" in record.getMessage() for record in caplog.records)


def test_loading_opens_no_network_connection(tmp_path, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    shutil.copy(ARCFACE_TINY, tmp_path / "w600k_tiny.onnx")

    load_identity_model(tmp_path).torch_module()
    load_identity_model(tmp_path / "w600k_tiny.onnx")

    assert attempts == []


def test_missing_file_raises(tmp_path):
    missing = tmp_path / "w600k_r50.onnx"

    with pytest.raises(CheckpointError, match="not found") as raised:
        load_identity_model(missing)
    assert str(missing) in str(raised.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"plain text, not a protobuf\n", "is not a valid ONNX file"),
        (b"", "is not a usable ONNX model"),
        ("half", "is not a valid ONNX file"),
    ],
)
def test_unreadable_file_raises(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content == "half":
        data = ARCFACE_TINY.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)

    with pytest.raises(CheckpointError, match=message) as raised:
        load_identity_model(path)
    assert str(path) in str(raised.value)


def test_file_without_onnx_suffix_raises(tmp_path):
    path = tmp_path / "model.bin"
    shutil.copy(ARCFACE_TINY, path)

    with pytest.raises(CheckpointError, match=r"does not end in .onnx"):
        load_identity_model(path)


@pytest.mark.parametrize(
    ("options", "given", "rule"),
    [
        ({"input_shape": ("batch", 3, 112, 96)}, "[batch, 3, 112, 96]", r"expected \[N, 3, S, S\]"),
        ({"input_shape": ("batch", 1, 112, 112)}, "[batch, 1, 112, 112]", r"expected \[N, 3, S, S\]"),
        ({"input_shape": ("batch", 3, "height", "width")}, "[batch, 3, height, width]", r"expected \[N, 3, S, S\]"),
        ({"output_rank": 4}, "[batch, 16, 1, 1]", r"expected \[N, D\]"),
        ({"num_outputs": 2}, "[batch, 16], [batch, 16]", r"expected one embedding output"),
    ],
)
def test_wrong_model_shapes_raise(tmp_path, options, given, rule):
    if options.get("input_shape", (0, 0, 0, 0))[2] == "height":
        # A Conv over symbolic sizes needs concrete ones to build; the check reads only the graph.
        model_file = build_onnx_model(tmp_path / "model.onnx")
        model = onnx.load(str(model_file))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param = "height"
        dims[3].dim_param = "width"
        onnx.save(model, str(model_file))
    else:
        model_file = build_onnx_model(tmp_path / "model.onnx", **options)

    with pytest.raises(CheckpointError, match=rule) as raised:
        load_identity_model(model_file)
    assert str(model_file) in str(raised.value)
    assert given in str(raised.value)


def test_uint8_input_raises(tmp_path):
    model_file = build_onnx_model(tmp_path / "model.onnx", input_type=TensorProto.UINT8)

    with pytest.raises(CheckpointError, match=r"takes UINT8 input, expected FLOAT"):
        load_identity_model(model_file)


def test_model_routed_elsewhere_raises(tmp_path):
    model_file = build_onnx_model(tmp_path / "genderage.onnx", input_shape=("batch", 3, 96, 96), embedding_size=3)

    with pytest.raises(CheckpointError, match=r"to Attribute with task 'genderage', not to a recognition model"):
        load_identity_model(model_file)


def test_model_not_routed_raises(tmp_path):
    model_file = build_onnx_model(tmp_path / "small.onnx", input_shape=("batch", 3, 64, 64))

    with pytest.raises(CheckpointError, match=r"\[batch, 3, 64, 64\]\) to no model type"):
        load_identity_model(model_file)


@pytest.mark.parametrize("device", ["gpu0", "cuda:x"])
def test_invalid_device_raises(device):
    with pytest.raises(ConfigError, match=rf"device '{device}' is invalid"):
        load_identity_model(ARCFACE_TINY, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_device_without_gpu_raises():
    with pytest.raises(ConfigError, match="torch finds no CUDA GPU"):
        load_identity_model(ARCFACE_TINY, device="cuda")
