"""Training of the demo generator by distillation from latent to rendered attributes.

The demo generator is a real StyleGAN2 (LatentGate's own module, saved in rosinality's format),
but it is not trained adversarially. Every latent z has a target: its first NUM_ATTRIBUTE_DIMS
coordinates, after the mapping network's own normalisation of z, are read as the standard
normal variables `u` of the renderer's prior (`attributes_from_normal`), and the generator is
trained to reproduce `render(attributes_from_normal(u))` with a pixel loss. The remaining z
coordinates carry nothing, and the noise inputs are switched off, so G(z) is deterministic.

So the generator's attribute distribution is the renderer's prior by construction, and the
quality figure that matters is how faithfully it reproduces each render
(`evaluate_generator`).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from harness.demo.attributes import NUM_ATTRIBUTE_DIMS, AvatarAttributes, attributes_from_normal
from harness.demo.render import render
from harness.generator import Architecture, Generator, build_generator, save_rosinality_checkpoint

log = logging.getLogger(__name__)

DEMO_ARCHITECTURE = Architecture(
    resolution=64,
    z_dim=64,
    w_dim=64,
    num_mapping_layers=4,
    mapping_hidden_dim=64,
    channels={4: 128, 8: 128, 16: 96, 32: 64, 64: 32},
)


def intended_attributes(z: torch.Tensor) -> AvatarAttributes:
    """Return the attributes a latent z `[N, z_dim]` is trained to render.

    z is normalised to unit second moment, as StyleGAN2's mapping network does first, so the
    target depends only on what the mapping network sees.
    """
    normalised = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    return attributes_from_normal(normalised[:, :NUM_ATTRIBUTE_DIMS])


def _downsampled_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 at full, half and quarter resolution: coarse layout converges before fine texture."""
    loss = F.l1_loss(output, target)
    for _ in range(2):
        output, target = F.avg_pool2d(output, 2), F.avg_pool2d(target, 2)
        loss = loss + F.l1_loss(output, target)
    return loss


def train_generator(
    architecture: Architecture = DEMO_ARCHITECTURE,
    steps: int = 6000,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
    mapping_learning_rate_factor: float = 10.0,
    seed: int = 0,
    progress: bool = True,
    checkpoint_path: Path | None = None,
    checkpoint_every: int = 1000,
) -> Generator:
    """Distil the renderer into a StyleGAN2 generator and return it in eval mode.

    The mapping network's weights are stored divided by its learning-rate multiplier (0.01),
    so Adam moves its effective weights 100 times slower than the synthesis network's; its
    learning rate is raised by `mapping_learning_rate_factor` to learn the prior's non-linear
    quantile functions within a short run. With `checkpoint_path`, the generator is also saved
    there (rosinality format, w_avg estimated) every `checkpoint_every` steps.
    """
    assert architecture.z_dim >= NUM_ATTRIBUTE_DIMS
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = build_generator(architecture)
    network.requires_grad_(True)
    for name, parameter in network.named_parameters():
        if name.endswith("noise_strength"):
            parameter.data.zero_()
            parameter.requires_grad_(False)
    mapping = [p for p in network.mapping.parameters() if p.requires_grad]
    synthesis = [p for p in network.synthesis.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        [
            {"params": mapping, "lr": learning_rate * mapping_learning_rate_factor},
            {"params": synthesis, "lr": learning_rate},
        ],
        betas=(0.9, 0.99),
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        [learning_rate * mapping_learning_rate_factor, learning_rate],
        total_steps=steps,
        pct_start=0.05,
    )

    network.train()
    bar = tqdm(range(steps), desc="generator", disable=not progress)
    for step in bar:
        z = torch.randn(batch_size, architecture.z_dim, generator=generator)
        target = render(intended_attributes(z), size=architecture.resolution) * 2 - 1
        output = network(z, noise_mode="none")
        loss = _downsampled_l1(output, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if checkpoint_path is not None and (step + 1) % checkpoint_every == 0:
            _save_checkpoint(network, checkpoint_path)
            log.info("step %d: loss %.4f, checkpoint written to %s", step + 1, loss.item(), checkpoint_path)

    network.eval().requires_grad_(False)
    network.estimate_w_avg()
    return network


def _save_checkpoint(network: Generator, path: Path) -> None:
    """Save a copy in rosinality's format with w_avg estimated, leaving training undisturbed."""
    snapshot = copy.deepcopy(network).eval().requires_grad_(False)
    snapshot.estimate_w_avg()
    save_rosinality_checkpoint(snapshot, path)
