"""Training, evaluation and ONNX export of the demo identity model.

An identity is an identity-geometry vector (face shape, eyes, nose, mouth, brows, eye colour).
The model is trained with ArcFace's additive angular margin loss on renders of a fixed bank of
training identities, each rendered under freshly drawn hair, skin tone, background, pose and
lighting, so it learns to recognise geometry and to ignore everything else. It is evaluated on
identities it never saw.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from harness.demo.attributes import (
    CLASS_NAMES,
    NUM_ATTRIBUTE_DIMS,
    attributes_from_normal,
    hairstyle_class,
    merge_identity,
    split_identity,
)
from harness.demo.datasets import balanced_attributes
from harness.demo.networks import IDENTITY_INPUT_SIZE, IdentityNet
from harness.demo.optimization import optimizer_step
from harness.demo.render import render
from harness.identity.preprocessing import FaceCrop, crop_and_resize
from harness.suite.regions import DEMO_FACE_CROP

log = logging.getLogger(__name__)


class ArcFaceHead(nn.Module):
    """Class weights and the additive angular margin loss of ArcFace (Deng et al., 2019).

    logits = scale * cos(theta_y + margin) for the true class y, scale * cos(theta_j) otherwise,
    where theta is the angle between the normalised embedding and the class weight.
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 30.0, margin: float = 0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_size) * 0.01)
        self.scale = scale
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cosine.gather(1, labels[:, None])
        theta = torch.acos(target)
        # Past theta = pi - margin, cos(theta + margin) would increase again; use the usual
        # linear continuation there so the target logit keeps falling with the angle.
        with_margin = torch.where(
            theta + self.margin < math.pi,
            torch.cos(theta + self.margin),
            target - self.margin * math.sin(self.margin),
        )
        logits = cosine.scatter(1, labels[:, None], with_margin)
        return F.cross_entropy(self.scale * logits, labels)


def face_inputs(images01: torch.Tensor) -> torch.Tensor:
    """Turn renders in [0, 1] into identity-model inputs: the demo face crop at 112 px in [-1, 1].

    This is the crop and resampling that `harness.identity` applies to generator frames, and
    (x - 127.5) / 127.5 on 0..255 values is x in [-1, 1]: the normalisation InsightFace applies
    to a recognition model without normalisation nodes of its own.
    """
    return crop_and_resize(images01 * 2 - 1, FaceCrop.parse(DEMO_FACE_CROP), IDENTITY_INPUT_SIZE)


def _render_identities(identity: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Render each identity row under freshly drawn hair, skin, background, pose and light."""
    u = torch.randn(len(identity), NUM_ATTRIBUTE_DIMS, generator=generator)
    _, other = split_identity(attributes_from_normal(u))
    return render(merge_identity(identity, other))


def identity_bank(num_identities: int, seed: int) -> torch.Tensor:
    """Draw `[num_identities, 9]` identity-geometry vectors from the prior."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(num_identities, NUM_ATTRIBUTE_DIMS, generator=generator)
    identity, _ = split_identity(attributes_from_normal(u))
    return identity


def train_identity(
    num_identities: int = 2000,
    steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> IdentityNet:
    """Train an `IdentityNet` with the ArcFace loss on a bank of rendered identities."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    bank = identity_bank(num_identities, seed)
    network = IdentityNet()
    head = ArcFaceHead(network.head[-1].num_features, num_identities)
    parameters = list(network.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps)

    network.train()
    bar = tqdm(range(steps), desc="identity model", disable=not progress)
    for step in bar:
        labels = torch.randint(num_identities, (batch_size,), generator=generator)
        images = _render_identities(bank[labels], generator)
        loss = head(network(face_inputs(images)), labels)
        optimizer_step(loss, optimizer, schedule)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return network.eval()


@torch.no_grad()
def embed_renders(network: IdentityNet, images01: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Return L2-normalised embeddings `[N, 512]` of renders in [0, 1]."""
    network.eval()
    parts = [network(face_inputs(images01[i : i + batch_size])) for i in range(0, len(images01), batch_size)]
    return F.normalize(torch.cat(parts), dim=1).numpy()


@torch.no_grad()
def evaluate_identity(
    network: IdentityNet,
    num_identities: int = 500,
    renders_per_identity: int = 4,
    seed: int = 777,
    false_accept_rate: float = 1e-3,
) -> dict:
    """Measure verification on held-out identities and the similarity across hairstyles.

    Every pair of renders of the same identity is a genuine pair, every pair of renders of
    different identities an impostor pair. The threshold is the impostor similarity quantile at
    `1 - false_accept_rate`; the true-accept rate is the share of genuine pairs above it.
    """
    generator = torch.Generator().manual_seed(seed)
    bank = identity_bank(num_identities, seed)
    labels = torch.arange(num_identities).repeat(renders_per_identity)
    embeddings = embed_renders(network, _render_identities(bank[labels], generator))
    similarity = embeddings @ embeddings.T
    same = (labels[:, None] == labels[None, :]).numpy()
    upper = np.triu(np.ones_like(same), k=1).astype(bool)
    genuine = similarity[same & upper]
    impostor = similarity[~same & upper]
    threshold = float(np.quantile(impostor, 1 - false_accept_rate))
    figures = {
        "num_identities": num_identities,
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "threshold_at_far": threshold,
        "far": false_accept_rate,
        "tar_at_far": float((genuine > threshold).mean()),
        "genuine_similarity_mean": float(genuine.mean()),
        "impostor_similarity_mean": float(impostor.mean()),
    }
    figures["same_identity_across_hairstyles"] = _similarity_across_hairstyles(network, bank[:100], generator)
    return figures


def _similarity_across_hairstyles(network: IdentityNet, identities: torch.Tensor, generator) -> float:
    """Mean cosine similarity of one identity rendered under two different hairstyle classes."""
    num_classes = len(CLASS_NAMES)
    styled, labels = balanced_attributes(num_classes * 64, generator)
    examples = [styled[torch.nonzero(labels == c).flatten()[:1]] for c in range(num_classes)]
    similarities = []
    for identity in identities:
        _, other = split_identity(type(styled).cat(examples))
        embeddings = embed_renders(network, render(merge_identity(identity[None], other)))
        pairwise = embeddings @ embeddings.T
        similarities.append(pairwise[np.triu_indices(num_classes, k=1)].mean())
    return float(np.mean(similarities))


def export_identity_onnx(network: IdentityNet, path: Path) -> None:
    """Export to ONNX with InsightFace's recognition conventions: `[N, 3, 112, 112]` RGB in,
    512-d embedding out, no normalisation inside the graph (InsightFace then applies
    (x - 127.5) / 127.5)."""
    network = network.eval()
    dummy = torch.zeros(2, 3, IDENTITY_INPUT_SIZE, IDENTITY_INPUT_SIZE)
    torch.onnx.export(
        network,
        (dummy,),
        str(path),
        input_names=["input.1"],
        output_names=["embedding"],
        dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
