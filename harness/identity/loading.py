"""Loading of an ArcFace recognition model from an ONNX file or an InsightFace model folder.

The model is opened by `insightface.model_zoo.get_model`, so the metric runs InsightFace's own
`ArcFaceONNX` object: its onnxruntime session, input name and normalisation constants. This
module checks everything a user can get wrong before and after that call and turns each failure
into a CheckpointError that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import onnx
import torch
from google.protobuf.message import DecodeError
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from harness.errors import CheckpointError, ConfigError
from harness.identity.model import IdentityModel, IdentityModelInfo
from harness.identity.preprocessing import FaceCrop

log = logging.getLogger(__name__)

# Errors that onnxruntime raises when it cannot build a session. They derive from Exception
# directly, not from RuntimeError.
_ORT_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)

# Source of input_mean and input_std for InsightFace's ArcFaceONNX when no manifest declares them.
_GUESSED_PREPROCESSING = "the names of the graph's first nodes"

_FIX_MODEL = (
    "Pass an ArcFace recognition model exported to ONNX (such as InsightFace's w600k_r50.onnx) "
    "or an InsightFace model folder that contains exactly one (such as buffalo_l)."
)


@dataclass(frozen=True)
class OnnxSignature:
    """Input and output shapes of an ONNX graph. A dimension is an int or its symbolic name."""

    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int | str, ...], ...]
    input_types: tuple[str, ...]  # ONNX element type names, e.g. "FLOAT"
    output_shapes: tuple[tuple[int | str, ...], ...]


def load_identity_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    face_crop: FaceCrop | Sequence[float] | None = None,
) -> IdentityModel:
    """Load an ArcFace recognition model for the identity metric and the identity loss.

    `path` is an `.onnx` file or a folder. In a folder, InsightFace's model zoo routes every
    `.onnx` file, and the one file it routes to a recognition model is used. When the folder has
    an InsightFace model-package manifest (`manifest.json`, version 2), the manifest's
    recognition task and its declared normalisation are used instead. `device` is the torch
    device of the loss path. onnxruntime uses CUDA for `cuda` devices when its CUDA provider is
    installed, and otherwise the CPU. `face_crop` is the face box (x0, y0, x1, y1) in normalised
    frame coordinates, the whole frame when None.

    Raises CheckpointError for a missing, unreadable or unsuitable model, and ConfigError for an
    invalid device or face_crop.
    """
    crop = FaceCrop.parse(face_crop)
    torch_device = _parse_device(device)
    providers = _onnxruntime_providers(torch_device)

    source = Path(path).expanduser()
    if not source.exists():
        raise CheckpointError(f"identity model {source} not found. {_FIX_MODEL}")
    if source.is_dir():
        model_file, recognizer, signature, preprocessing_source = _load_from_folder(
            source, providers
        )
    else:
        model_file = source
        signature = _read_signature(model_file)
        _check_recognition_signature(model_file, signature)
        recognizer = _route(model_file, providers)
        _check_routed_to_recognition(model_file, recognizer, signature)
        _warn_if_in_package(model_file)
        preprocessing_source = _GUESSED_PREPROCESSING

    input_size = signature.input_shapes[0][2]
    embedding_size = signature.output_shapes[0][1]
    assert isinstance(input_size, int) and isinstance(embedding_size, int)
    assert tuple(recognizer.input_size) == (input_size, input_size), recognizer.input_size

    # Without a manifest, InsightFace's ArcFaceONNX does not read the normalisation from the
    # file but guesses it from the names of the graph's first eight nodes. Sub* or _minus* plus
    # Mul* or _mul* nodes mean an MXNet export that normalises inside the graph (mean 0, std 1),
    # and anything else gets mean 127.5 and std 127.5 (insightface 2.1,
    # model_zoo/arcface_onnx.py). A wrong guess changes every embedding without any error, so
    # the choice is logged where users see it.
    log.info(
        "identity model %s: input = (RGB 0..255 - %g) / %g, as InsightFace chose from %s",
        model_file,
        recognizer.input_mean,
        recognizer.input_std,
        preprocessing_source,
    )

    info = IdentityModelInfo(
        source=str(source),
        path=str(model_file.resolve()),
        sha256=_sha256(model_file),
        input_size=input_size,
        embedding_size=embedding_size,
        input_mean=float(recognizer.input_mean),
        input_std=float(recognizer.input_std),
        preprocessing_source=preprocessing_source,
        face_crop=crop.as_tuple(),
        onnxruntime_providers=tuple(recognizer.session.get_providers()),
    )
    batch_dim = signature.input_shapes[0][0]
    fixed_batch_size = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
    return IdentityModel(info, recognizer, torch_device, crop, fixed_batch_size)


def _parse_device(device: str | torch.device) -> torch.device:
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(
            f"device {device!r} is invalid ({error}). Use cpu, cuda or cuda:N."
        ) from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was requested, but torch finds no CUDA GPU. Use device cpu."
        )
    return torch_device


def _onnxruntime_providers(torch_device: torch.device) -> list[Any]:
    """Return the onnxruntime execution providers for the metric path on this device."""
    import onnxruntime

    if torch_device.type == "cuda":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return [
                ("CUDAExecutionProvider", {"device_id": torch_device.index or 0}),
                "CPUExecutionProvider",
            ]
        log.warning(
            "onnxruntime has no CUDAExecutionProvider (the onnxruntime-gpu package provides "
            "it), so the identity metric runs on the CPU while the identity loss runs on %s",
            torch_device,
        )
    elif torch_device.type != "cpu":
        log.warning(
            "onnxruntime cannot run on torch device %s, so the identity metric runs on the CPU",
            torch_device,
        )
    return ["CPUExecutionProvider"]


def _read_signature(model_file: Path) -> OnnxSignature:
    """Parse an ONNX file's graph inputs and outputs, raising CheckpointError if it is not ONNX."""
    if model_file.suffix != ".onnx":
        # InsightFace's get_model treats a name without the .onnx suffix as a model name under
        # ~/.insightface/models, so such a file would never be opened.
        raise CheckpointError(
            f"identity model {model_file} does not end in .onnx; the identity model must be an "
            f"ONNX file with that suffix. Rename it, or export the model to ONNX. {_FIX_MODEL}"
        )
    try:
        # The graph is enough to check shapes, so external weight files are not read here.
        model = onnx.load(str(model_file), load_external_data=False)
    except DecodeError as error:
        raise CheckpointError(
            f"identity model {model_file} is not a valid ONNX file ({error}). It may be "
            "truncated or in another format; download or export it again."
        ) from None
    except OSError as error:
        raise CheckpointError(f"identity model {model_file} cannot be read: {error}") from None

    initializer_names = {initializer.name for initializer in model.graph.initializer}
    # ONNX files before IR version 4 also list the weights among the graph inputs.
    inputs = [value for value in model.graph.input if value.name not in initializer_names]
    if not model.graph.node or not inputs or not model.graph.output:
        raise CheckpointError(
            f"identity model {model_file} is not a usable ONNX model: its graph has "
            f"{len(model.graph.node)} nodes, {len(inputs)} inputs and {len(model.graph.output)} "
            "outputs. The file may be empty or truncated; download or export it again."
        )
    return OnnxSignature(
        input_names=tuple(value.name for value in inputs),
        input_shapes=tuple(_value_shape(value) for value in inputs),
        input_types=tuple(
            onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type) for value in inputs
        ),
        output_shapes=tuple(_value_shape(value) for value in model.graph.output),
    )


def _value_shape(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(dim.dim_value if dim.HasField("dim_value") else dim.dim_param or "?" for dim in dims)


def _format_shapes(shapes: tuple[tuple[int | str, ...], ...]) -> str:
    return ", ".join(f"[{', '.join(str(dim) for dim in shape)}]" for shape in shapes)


def _check_recognition_signature(model_file: Path, signature: OnnxSignature) -> None:
    """Raise CheckpointError unless the graph maps one `[N, 3, S, S]` float image to `[N, D]`."""
    input_shapes = _format_shapes(signature.input_shapes)
    output_shapes = _format_shapes(signature.output_shapes)
    if len(signature.input_shapes) != 1:
        raise CheckpointError(
            f"identity model {model_file} has inputs {input_shapes}, expected one input of "
            f"shape [N, 3, S, S]. {_FIX_MODEL}"
        )
    shape = signature.input_shapes[0]
    square = len(shape) == 4 and isinstance(shape[2], int) and shape[2] > 0 and shape[2] == shape[3]
    if not square or shape[1] != 3:
        raise CheckpointError(
            f"identity model {model_file} has input shape {input_shapes}, expected [N, 3, S, S]: "
            f"3 colour channels and a fixed square size S. {_FIX_MODEL}"
        )
    if signature.input_types[0] != "FLOAT":
        raise CheckpointError(
            f"identity model {model_file} takes {signature.input_types[0]} input, expected "
            "FLOAT (float32): LatentGate feeds float pixel values so that gradients reach the "
            "generator. Use a recognition model with a float input."
        )
    if len(signature.output_shapes) != 1:
        raise CheckpointError(
            f"identity model {model_file} has outputs {output_shapes}, expected one embedding "
            f"output of shape [N, D]. {_FIX_MODEL}"
        )
    output = signature.output_shapes[0]
    if len(output) != 2 or not isinstance(output[1], int) or output[1] <= 0:
        raise CheckpointError(
            f"identity model {model_file} has output shape {output_shapes}, expected [N, D]: one "
            f"embedding vector of fixed size D per input image. {_FIX_MODEL}"
        )


def _route(model_file: Path, providers: list[Any]) -> Any:
    """Open an ONNX file with InsightFace's model zoo and return the model object it routes to.

    Returns None when InsightFace routes the file to no model type.
    """
    from insightface.model_zoo import get_model

    try:
        # download=False is the default; it is spelled out because this must never fetch.
        return get_model(str(model_file), providers=providers, download=False)
    except _ORT_LOAD_ERRORS as error:
        raise CheckpointError(
            f"identity model {model_file} cannot be loaded by onnxruntime: {error}. The file "
            "may be damaged or use operators this onnxruntime lacks; export it again."
        ) from None
    except (AssertionError, IndexError, TypeError) as error:
        # InsightFace checks its inputs with assert, and its router indexes and compares the
        # input's height and width without checking rank or that they are numbers.
        raise CheckpointError(
            f"InsightFace's model zoo cannot open identity model {model_file} "
            f"({type(error).__name__}: {error}). {_FIX_MODEL}"
        ) from None


def _check_routed_to_recognition(model_file: Path, recognizer: Any, signature: OnnxSignature) -> None:
    if recognizer is None:
        # insightface 2.1 ModelRouter: ArcFaceONNX takes square inputs of at least 112 px whose
        # side is a multiple of 16, after detection, landmark, attribute and swapper checks.
        raise CheckpointError(
            f"InsightFace's model zoo routes identity model {model_file} (input shape "
            f"{_format_shapes(signature.input_shapes)}) to no model type; it treats only square "
            f"inputs of at least 112 px with a side divisible by 16 as recognition models. "
            f"{_FIX_MODEL}"
        )
    taskname = getattr(recognizer, "taskname", None)
    if taskname != "recognition":
        raise CheckpointError(
            f"InsightFace's model zoo routes identity model {model_file} (input shape "
            f"{_format_shapes(signature.input_shapes)}) to {type(recognizer).__name__} with "
            f"task {taskname!r}, not to a recognition model. {_FIX_MODEL}"
        )


def _load_from_folder(
    folder: Path, providers: list[Any]
) -> tuple[Path, Any, OnnxSignature, str]:
    """Pick the recognition model in an InsightFace model folder and open it."""
    from insightface.model_zoo import has_model_package_manifest

    if has_model_package_manifest(folder):
        return _load_from_manifest(folder, providers)

    onnx_files = sorted(path for path in folder.glob("*.onnx") if path.is_file())
    if not onnx_files:
        nested = sorted(str(path.relative_to(folder)) for path in folder.glob("*/*.onnx"))
        hint = f" Its subfolders contain {', '.join(nested)}; pass that subfolder." if nested else ""
        raise CheckpointError(
            f"identity model folder {folder} contains no .onnx files.{hint} {_FIX_MODEL}"
        )

    found: dict[str, str] = {}  # file name -> what InsightFace made of it, for the error message
    candidates: list[tuple[Path, Any, OnnxSignature]] = []
    for model_file in onnx_files:
        try:
            signature = _read_signature(model_file)
        except CheckpointError:
            found[model_file.name] = "not a valid ONNX file"
            continue
        if len(signature.input_shapes[0]) != 4:
            # Listed here, because InsightFace's router would fail on it with an IndexError.
            found[model_file.name] = f"input {_format_shapes(signature.input_shapes[:1])}, not an image model"
            continue
        try:
            model = _route(model_file, providers)
        except CheckpointError:
            found[model_file.name] = "cannot be opened"
            continue
        taskname = getattr(model, "taskname", None) if model is not None else None
        found[model_file.name] = taskname or "not routed to any model type"
        if taskname == "recognition":
            candidates.append((model_file, model, signature))

    listing = "; ".join(f"{name}: {kind}" for name, kind in found.items())
    if not candidates:
        raise CheckpointError(
            f"identity model folder {folder} contains no recognition model. InsightFace's model "
            f"zoo found: {listing}. {_FIX_MODEL}"
        )
    if len(candidates) > 1:
        names = ", ".join(model_file.name for model_file, _, _ in candidates)
        raise CheckpointError(
            f"identity model folder {folder} contains {len(candidates)} recognition models "
            f"({names}), so the choice is ambiguous. Pass one of these files instead of the "
            f"folder. All files: {listing}."
        )

    model_file, recognizer, signature = candidates[0]
    log.info("identity model folder %s: using %s (%s)", folder, model_file.name, listing)
    _check_recognition_signature(model_file, signature)
    return model_file, recognizer, signature, _GUESSED_PREPROCESSING


def _load_from_manifest(
    folder: Path, providers: list[Any]
) -> tuple[Path, Any, OnnxSignature, str]:
    """Open the recognition task of an InsightFace model package (manifest version 2)."""
    from insightface.model_zoo import get_model

    manifest = folder / "manifest.json"
    try:
        recognizer = get_model(
            str(folder), model_task="recognition", providers=providers, download=False
        )
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        # InsightFace raises these for a malformed manifest, a missing recognition task or file,
        # and a SHA-256 mismatch.
        raise CheckpointError(
            f"identity model package {manifest} cannot be used for recognition: {error}. Fix "
            "the manifest, or pass the recognition .onnx file itself."
        ) from None
    except _ORT_LOAD_ERRORS as error:
        raise CheckpointError(
            f"the recognition model of package {manifest} cannot be loaded by onnxruntime: "
            f"{error}. The file may be damaged; download the package again."
        ) from None

    model_file = Path(recognizer.model_file)
    signature = _read_signature(model_file)
    _check_recognition_signature(model_file, signature)
    return model_file, recognizer, signature, f"the recognition preprocessing in {manifest}"


def _warn_if_in_package(model_file: Path) -> None:
    from insightface.model_zoo import has_model_package_manifest

    if has_model_package_manifest(model_file.parent):
        # InsightFace's get_model ignores a package manifest when given the .onnx file itself.
        log.warning(
            "identity model %s lies in an InsightFace model package whose manifest.json declares "
            "its normalisation, but a file path makes InsightFace guess it instead; pass the "
            "folder %s to use the manifest",
            model_file,
            model_file.parent,
        )


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
