"""Activation checkpointing for the full- and half-resolution parts of the network.

At full resolution the UNet's first encoder block, its last decoder stage and the specialist
heads hold most of the activation memory of a training step while doing a minority of its
arithmetic (every UNet level costs about the same FLOPs, but memory halves per level). Keeping
only their inputs and recomputing them in the backward pass cuts peak memory by about half for a
modest cost in time; the half-resolution level (``RECOMPUTED_LEVELS`` in ``model.network``) holds
about half of what is left.

BatchNorm would update its running statistics a second time during the recomputation; the
recompute context sets every BN momentum in the segment to 0 (running stats unchanged) and
restores it afterwards, so training statistics are exactly those of an uncheckpointed run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
        for m in norms
    ]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum, tracked in saved:
            norm.momentum = momentum
            if tracked is not None:
                norm.num_batches_tracked.copy_(tracked)


def run_checkpointed(module: nn.Module, *inputs: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """``module(*inputs)``, keeping only the inputs for backward when training with grads."""
    if not (enabled and module.training and torch.is_grad_enabled()):
        return module(*inputs)
    return checkpoint(
        module,
        *inputs,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), frozen_batchnorm_stats(module)),
    )
