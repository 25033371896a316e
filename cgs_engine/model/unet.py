"""The 2D UNet backbone of CGS.

Each level is a block ``conv3x3-BN-LeakyReLU-dropout-conv3x3-BN-LeakyReLU``. The encoder goes down
with 2x2 max-pooling; the decoder goes up with a 2x2 transposed convolution, concatenates the skip
connection and applies the same block without dropout. The output is the last decoder feature map
(``widths[0]`` channels, full input resolution).

With ``depth = len(widths)`` the input is pooled ``depth - 1`` times, so H and W must be divisible
by ``2 ** (depth - 1)`` (16 for the default 5 levels). Other sizes raise ``ValueError``; callers pad
or resize first (``UNet.size_divisor`` tells them the multiple).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .memory import run_checkpointed

LEAKY_SLOPE = 0.01


class ConvBlock(nn.Sequential):
    """conv3x3-BN-LeakyReLU-[dropout]-conv3x3-BN-LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )


class DecoderStage(nn.Module):
    """Transposed-conv 2x upsampling, concatenation with the skip, then a block without dropout."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.block = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """2D UNet returning the last decoder feature map ([B, widths[0], H, W])."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        dropouts: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    ) -> None:
        super().__init__()
        widths, dropouts = tuple(widths), tuple(dropouts)
        if len(widths) < 1:
            raise ValueError("UNet needs at least one level (widths is empty)")
        if len(widths) != len(dropouts):
            raise ValueError(f"widths ({len(widths)} levels) and dropouts ({len(dropouts)}) differ in length")
        self.depth = len(widths)
        self.out_channels = widths[0]
        self.size_divisor = 2 ** (self.depth - 1)

        encoder_inputs = (in_channels, *widths[:-1])
        self.encoder = nn.ModuleList(
            ConvBlock(c_in, c_out, p) for c_in, c_out, p in zip(encoder_inputs, widths, dropouts, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        # levels (0 = full resolution) whose blocks are recomputed in backward instead of storing
        # their activations: set by training to trade recompute for memory (see model.memory)
        self.checkpoint_levels = 0
        self.decoder = nn.ModuleList(
            DecoderStage(widths[level], widths[level - 1]) for level in range(self.depth - 1, 0, -1)
        )

    def check_input_size(self, height: int, width: int) -> None:
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(
                f"input size {height}x{width} is not divisible by {self.size_divisor} "
                f"(a {self.depth}-level UNet pools {self.depth - 1} times); pad or resize the slice"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x.shape[-2], x.shape[-1])
        skips = []
        recomputed = self.checkpoint_levels
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = self.pool(x)
            x = run_checkpointed(block, x, enabled=level < recomputed)
            skips.append(x)
        x = skips.pop()
        for stage in self.decoder:
            level = len(skips) - 1  # the level of the skip it joins: the resolution it outputs
            x = run_checkpointed(stage, x, skips.pop(), enabled=level < recomputed)
        return x
