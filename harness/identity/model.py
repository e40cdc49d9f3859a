"""The loaded identity model: ArcFace embeddings of generator frames on two paths.

`IdentityModel.embed` is the metric path. It runs InsightFace's `ArcFaceONNX` on onnxruntime and
returns numpy arrays. `IdentityModel.embed_torch` is the loss path. It runs an onnx2torch
conversion of the same ONNX file and keeps gradients. Both paths share the crop, the resize and
InsightFace's normalisation constants, so they agree to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import CheckpointError
from harness.identity.preprocessing import FaceCrop, as_frames, model_pixels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdentityModelInfo:
    """Provenance and input convention of a loaded identity model, for the run's saved config."""

    source: str  # the path as given: an .onnx file or a model folder
    path: str  # the resolved .onnx file that was loaded
    sha256: str  # of the .onnx file
    input_size: int  # side of the square model input, in pixels
    embedding_size: int
    input_mean: float  # model input = (RGB value in 0..255 - input_mean) / input_std
    input_std: float
    preprocessing_source: str  # where InsightFace took input_mean and input_std from
    face_crop: tuple[float, float, float, float]  # (x0, y0, x1, y1), normalised coordinates
    onnxruntime_providers: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class IdentityModel:
    """An ArcFace model that embeds generator frames `[N, 3, H, W]` (RGB, [-1, 1]) as `[N, D]`.

    Create it with `load_identity_model`. `recognizer` is InsightFace's `ArcFaceONNX` object.
    """

    def __init__(
        self,
        info: IdentityModelInfo,
        recognizer: Any,
        device: torch.device,
        crop: FaceCrop,
        fixed_batch_size: int | None,
    ) -> None:
        self.info = info
        self.recognizer = recognizer
        self.device = device
        self.crop = crop
        # Set when the ONNX graph fixes its batch dimension, e.g. exports with batch size 1.
        self.fixed_batch_size = fixed_batch_size
        self._torch_module: IdentityEmbedder | None = None

    def __repr__(self) -> str:
        return (
            f"IdentityModel(path={self.info.path!r}, input_size={self.info.input_size}, "
            f"embedding_size={self.info.embedding_size}, face_crop={self.info.face_crop})"
        )

    def embed(self, frames: torch.Tensor | np.ndarray) -> np.ndarray:
        """Embed frames with InsightFace's onnxruntime session and return float32 `[N, D]`.

        This is the metric path. The crop and resize run in torch without gradients, then
        `ArcFaceONNX.forward` applies `(x - input_mean) / input_std` to the 0..255 RGB float
        values and runs the session. The values are not rounded to uint8. Raises ShapeError for
        frames that are not `[N, 3, H, W]` floats.
        """
        frames = as_frames(frames)
        with torch.no_grad():
            pixels = model_pixels(frames, self.crop, self.info.input_size).cpu()  # [N, 3, S, S]

        def run_session(chunk: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.recognizer.forward(chunk.numpy()))

        embeddings = _map_batches(pixels, self.fixed_batch_size, run_session)  # [N, D]
        return embeddings.numpy().astype(np.float32, copy=False)

    def torch_module(self) -> IdentityEmbedder:
        """Return the differentiable embedder, converting the ONNX file with onnx2torch once.

        The module is cached, in eval mode, on this model's device, and its weights do not
        require gradients. Gradients still flow to the input frames. Raises CheckpointError when
        onnx2torch cannot convert the graph; the metric path `embed` does not need the conversion.
        """
        if self._torch_module is None:
            self._torch_module = self._convert()
        return self._torch_module

    def embed_torch(self, frames: torch.Tensor) -> torch.Tensor:
        """Embed frames through the onnx2torch conversion and return `[N, D]` on this device.

        This is the loss path: it keeps the autograd graph, so wrap calls whose gradients are not
        needed (such as the reference embedding of the unedited frame) in `torch.no_grad()`.
        Frames on another device are moved to this model's device.
        """
        return self.torch_module()(frames)

    def _convert(self) -> IdentityEmbedder:
        from onnx2torch import convert

        started = time.perf_counter()
        try:
            network = convert(self.info.path)
        except (NotImplementedError, ValueError, RuntimeError, KeyError) as error:
            raise CheckpointError(
                f"onnx2torch cannot convert identity model {self.info.path} for the identity "
                f"loss ({type(error).__name__}: {error}). The metric path still works; for the "
                "loss, use a recognition model whose operators onnx2torch supports."
            ) from None
        embedder = IdentityEmbedder(
            network,
            crop=self.crop,
            input_size=self.info.input_size,
            input_mean=self.info.input_mean,
            input_std=self.info.input_std,
            fixed_batch_size=self.fixed_batch_size,
        ).to(self.device)
        log.info(
            "converted identity model %s to torch with onnx2torch in %.2f s",
            self.info.path,
            time.perf_counter() - started,
        )
        return embedder


class IdentityEmbedder(nn.Module):
    """Differentiable identity embedder: frames `[N, 3, H, W]` in [-1, 1] to embeddings `[N, D]`.

    Wraps the onnx2torch conversion of the recognition model with the same crop, resize and
    normalisation as the metric path. The network stays in eval mode even when `train()` is
    called, because onnx2torch turns ONNX BatchNormalization into torch batch norm layers, which
    would use batch statistics in training mode and change the embeddings.
    """

    def __init__(
        self,
        network: nn.Module,
        crop: FaceCrop,
        input_size: int,
        input_mean: float,
        input_std: float,
        fixed_batch_size: int | None,
    ) -> None:
        super().__init__()
        self.network = network
        self.crop = crop
        self.input_size = input_size
        self.input_mean = input_mean
        self.input_std = input_std
        self.fixed_batch_size = fixed_batch_size
        self.network.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> IdentityEmbedder:
        """Keep eval mode whatever `mode` is; see the class docstring."""
        return super().train(False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        frames = as_frames(frames).to(self._device())
        pixels = model_pixels(frames, self.crop, self.input_size)  # [N, 3, S, S], RGB 0..255
        # The same formula as InsightFace's ArcFaceONNX.forward, with its constants.
        blob = (pixels - self.input_mean) / self.input_std
        return _map_batches(blob, self.fixed_batch_size, self.network)  # [N, D]

    def _device(self) -> torch.device:
        for tensor in self.network.parameters():
            return tensor.device
        for tensor in self.network.buffers():
            return tensor.device
        return torch.device("cpu")


def _map_batches(
    inputs: torch.Tensor,
    batch_size: int | None,
    run: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Apply `run` to `inputs` whole, or in batches of exactly `batch_size` rows.

    A graph with a fixed batch dimension accepts only that many rows, so the last batch is
    padded with copies of its last row and the padding rows are dropped from the output.
    """
    if batch_size is None or inputs.shape[0] == batch_size:
        return run(inputs)
    outputs = []
    for start in range(0, inputs.shape[0], batch_size):
        chunk = inputs[start : start + batch_size]
        num_real = chunk.shape[0]
        if num_real < batch_size:
            padding = chunk[-1:].expand(batch_size - num_real, *chunk.shape[1:])
            chunk = torch.cat([chunk, padding])
        outputs.append(run(chunk)[:num_real])
    return torch.cat(outputs)
