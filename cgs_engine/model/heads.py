"""Generalist and specialist heads.

The generalist is a conv3x3 from the decoder features to C = K + 1 class logits.

Specialist k (k = 1..K) is ``conv1x1(F->F)-BN-LeakyReLU-conv3x3(F->S)`` with S = 3 channels
(0 background, 1 "my class k", 2 "another target class") or S = 2 for binary one-vs-rest heads.
``SpecialistHeads`` runs all K of them as one grouped module: the K 1x1 convolutions read the
same input, so they stack into one conv with K*F outputs; BatchNorm is per channel, so one BN over
K*F channels equals K separate BNs; and the 3x3 convolutions become one conv with ``groups=K``.
The result is identical to K separate ``SpecialistHead`` modules (``load_from_separate`` copies
their weights in) at the cost of three kernel launches instead of 3K.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .unet import LEAKY_SLOPE


class GeneralistHead(nn.Conv2d):
    """conv3x3: features [B, F, H, W] -> class logits [B, C, H, W]."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, kernel_size=3, padding=1)


class SpecialistHead(nn.Sequential):
    """One specialist head, as written in the paper (the reference for ``SpecialistHeads``)."""

    def __init__(self, in_channels: int, out_channels: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size=1),
            nn.BatchNorm2d(in_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        )


class SpecialistHeads(nn.Module):
    """K specialist heads in one grouped module: features [B, F, H, W] -> logits [B, K, S, H, W]."""

    def __init__(self, in_channels: int, num_heads: int, out_channels: int = 3) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"need at least one specialist head, got {num_heads}")
        self.num_heads = num_heads
        self.hidden_channels = in_channels
        self.out_channels = out_channels
        hidden = num_heads * in_channels
        self.expand = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.classify = nn.Conv2d(
            hidden, num_heads * out_channels, kernel_size=3, padding=1, groups=num_heads
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.classify(self.act(self.norm(self.expand(features))))
        return logits.unflatten(1, (self.num_heads, self.out_channels))

    @torch.no_grad()
    def load_from_separate(self, heads: Sequence[SpecialistHead]) -> None:
        """Copy the parameters and BN buffers of K separate heads (head k -> group k) into this module."""
        if len(heads) != self.num_heads:
            raise ValueError(f"expected {self.num_heads} heads, got {len(heads)}")
        f, s = self.hidden_channels, self.out_channels
        for k, head in enumerate(heads):
            conv1, norm, _, conv3 = head
            hidden_slice, out_slice = slice(k * f, (k + 1) * f), slice(k * s, (k + 1) * s)
            self.expand.weight[hidden_slice].copy_(conv1.weight)
            self.expand.bias[hidden_slice].copy_(conv1.bias)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(self.norm, name)[hidden_slice].copy_(getattr(norm, name))
            self.classify.weight[out_slice].copy_(conv3.weight)
            self.classify.bias[out_slice].copy_(conv3.bias)
        self.norm.num_batches_tracked.copy_(heads[0][1].num_batches_tracked)
