"""Direction search: one W+ direction per class, shared by a batch of sampled faces.

For a class c, the direction d (shape `[num_ws, w_dim]`, zero outside the chosen W+ layers)
minimises, over N base latents w_i,

    mean_i CE(classifier(G(w_i + d)), c)
        + lambda_id * mean_i (1 - cos(E(G(w_i)), E(G(w_i + d))))
        + lambda_l2 * |d|^2

with Adam, where G is the generator's synthesis network and E the identity model. All classes
are optimised in one batch. Class c only changes the images of its own slice, so each class's
gradient depends on its own loss alone. A class whose loss, gradient or direction stops being
finite is stopped with status `error`, and the others go on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    """Optimisation settings of the direction search."""

    steps: int = 100
    learning_rate: float = 0.05
    lambda_id: float = 1.0
    lambda_l2: float = 0.01
    layers: tuple[int, ...] | None = None  # W+ indices the direction may change; None = all
    # Classes optimised in one forward pass; lower it to save memory (None = all classes).
    class_batch_size: int | None = None


@dataclass
class DirectionResult:
    """The outcome of the search for one class."""

    class_name: str
    class_index: int
    status: str  # "ok" or "error"
    direction: torch.Tensor  # [num_ws, w_dim], zero where the search stopped with an error
    message: str = ""
    error_step: int | None = None  # index of the failing step, counting from 0
    loss_history: list[float] = field(default_factory=list)
    final_losses: dict[str, float] = field(default_factory=dict)


def layer_mask(num_ws: int, layers: Sequence[int] | None) -> torch.Tensor:
    """Return a `[num_ws, 1]` mask that is 1 on the W+ layers a direction may change."""
    mask = torch.zeros(num_ws, 1)
    if layers is None:
        mask[:] = 1
        return mask
    for index in layers:
        assert 0 <= index < num_ws, f"layer {index} outside 0..{num_ws - 1}"
        mask[index] = 1
    return mask


def search_directions(
    synthesis: Callable[[torch.Tensor], torch.Tensor],
    classifier: Callable[[torch.Tensor], torch.Tensor],
    embed: Callable[[torch.Tensor], torch.Tensor],
    ws: torch.Tensor,
    classes: Sequence[tuple[str, int]],
    settings: SearchSettings,
    progress: bool = True,
) -> list[DirectionResult]:
    """Find one direction per class for the base latents `ws` `[N, num_ws, w_dim]`.

    `synthesis` maps ws to images `[N, 3, H, W]` in [-1, 1]; `classifier` maps images to logits
    `[N, num_classes]`; `embed` maps images to identity embeddings `[N, D]` differentiably.
    `classes` lists (name, index in the classifier's output) pairs.
    """
    num_samples, num_ws, w_dim = ws.shape
    ws = ws.detach()
    mask = layer_mask(num_ws, settings.layers).to(ws)
    with torch.no_grad():
        base_embeddings = embed(synthesis(ws))  # [N, D]

    batch_size = settings.class_batch_size or len(classes)
    results: list[DirectionResult] = []
    for start in range(0, len(classes), batch_size):
        chunk = classes[start : start + batch_size]
        results.extend(
            _search_chunk(
                synthesis, classifier, embed, ws, base_embeddings, mask, chunk, settings, progress
            )
        )
    return results


def _search_chunk(
    synthesis, classifier, embed, ws, base_embeddings, mask, classes, settings, progress
) -> list[DirectionResult]:
    num_classes = len(classes)
    num_samples, num_ws, w_dim = ws.shape
    directions = torch.zeros(num_classes, num_ws, w_dim, device=ws.device, requires_grad=True)
    optimizer = torch.optim.Adam([directions], lr=settings.learning_rate)
    targets = torch.tensor([index for _, index in classes], device=ws.device)
    targets = targets.repeat_interleave(num_samples)  # [C * N]
    active = torch.ones(num_classes, dtype=torch.bool)
    results = [
        DirectionResult(name, index, "ok", torch.zeros(num_ws, w_dim)) for name, index in classes
    ]

    names = ", ".join(name for name, _ in classes)
    steps = tqdm(
        range(settings.steps), desc=f"search {names}", disable=not progress, leave=False
    )
    for step in steps:
        optimizer.zero_grad(set_to_none=True)
        masked = directions * mask  # [C, num_ws, w_dim]
        shifted = ws.unsqueeze(0) + masked.unsqueeze(1)  # [C, N, num_ws, w_dim]
        images = synthesis(shifted.reshape(num_classes * num_samples, num_ws, w_dim))

        logits = classifier(images)
        cross_entropy = F.cross_entropy(logits, targets, reduction="none")
        cross_entropy = cross_entropy.view(num_classes, num_samples).mean(dim=1)
        embeddings = embed(images).view(num_classes, num_samples, -1)
        cosine = F.cosine_similarity(embeddings, base_embeddings.unsqueeze(0), dim=-1)
        identity = (1 - cosine).mean(dim=1)
        l2 = masked.pow(2).sum(dim=(1, 2))
        per_class = cross_entropy + settings.lambda_id * identity + settings.lambda_l2 * l2

        finite = torch.isfinite(per_class.detach())
        for c in torch.nonzero(active & ~finite.cpu()).flatten().tolist():
            _stop(results[c], active, c, step, "non-finite loss")
        if not active.any():
            break
        keep = active.to(per_class.device)
        total = torch.where(keep, per_class, torch.zeros_like(per_class)).sum()
        total.backward()

        grad_finite = torch.isfinite(directions.grad).flatten(1).all(dim=1).cpu()
        for c in torch.nonzero(active & ~grad_finite).flatten().tolist():
            _stop(results[c], active, c, step, "non-finite gradient")
        with torch.no_grad():
            directions.grad[~active.to(directions.device)] = 0
        optimizer.step()

        with torch.no_grad():
            latent_finite = torch.isfinite(directions).flatten(1).all(dim=1).cpu()
            for c in torch.nonzero(active & ~latent_finite).flatten().tolist():
                _stop(results[c], active, c, step, "non-finite latent")
            directions[~active.to(directions.device)] = 0

        for c in range(num_classes):
            if active[c]:
                results[c].loss_history.append(float(per_class[c].detach()))
        if progress:
            steps.set_postfix(loss=f"{float(total.detach()) / max(int(active.sum()), 1):.3f}")

    final = (directions.detach() * mask).cpu()
    for c, result in enumerate(results):
        if result.status != "ok":
            continue
        result.direction = final[c]
        result.final_losses = {
            "cross_entropy": float(cross_entropy[c].detach()),
            "identity": float(identity[c].detach()),
            "l2": float(l2[c].detach()),
        }
        log.info(
            "class %s: loss %.4f after %d steps (cross-entropy %.4f, identity %.4f, |d|^2 %.3f)",
            result.class_name,
            result.loss_history[-1] if result.loss_history else math.nan,
            settings.steps,
            result.final_losses["cross_entropy"],
            result.final_losses["identity"],
            result.final_losses["l2"],
        )
    return results


def _stop(result: DirectionResult, active: torch.Tensor, c: int, step: int, reason: str) -> None:
    active[c] = False
    result.status = "error"
    result.error_step = step
    result.message = f"{reason} at step {step}"
    log.error("class %s: search stopped, %s", result.class_name, result.message)
