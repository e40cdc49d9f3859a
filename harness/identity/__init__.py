"""ArcFace identity embeddings of generator frames, for the identity metric and the identity loss.

One ONNX recognition model serves both. `IdentityModel.embed` runs it through InsightFace's
`ArcFaceONNX` on onnxruntime, for the `identity_cos_sim` metric. `IdentityModel.embed_torch` runs
an onnx2torch conversion of the same file, for the differentiable identity loss of the direction
search. Both apply the same face crop, resize and input normalisation, so the search optimises
what the metric measures.
"""

from harness.identity.loading import load_identity_model
from harness.identity.model import IdentityEmbedder, IdentityModel, IdentityModelInfo
from harness.identity.preprocessing import FaceCrop
from harness.identity.similarity import cosine_similarity

__all__ = [
    "FaceCrop",
    "IdentityEmbedder",
    "IdentityModel",
    "IdentityModelInfo",
    "cosine_similarity",
    "load_identity_model",
]
