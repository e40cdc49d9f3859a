"""The optimiser step shared by the demo world's training loops."""

from __future__ import annotations

import torch


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler
) -> None:
    """Backpropagate `loss`, update the parameters, then advance the learning-rate schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
