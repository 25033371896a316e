"""CGSNet: a swappable backbone, the generalist head and (optionally) K specialist heads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import nn

from .heads import GeneralistHead, SpecialistHeads
from .memory import run_checkpointed
from .unet import UNet

HEAD_TYPES = ("three-class", "binary", "none")
# UNet levels recomputed when saving memory. Level 1 (half resolution) holds about half of what
# level 0's recompute leaves stored, for about a ninth more forward work: at 12+12 images of 256 px
# it took the fp32 step's peak from 3.1 to 2.8 GiB at the same step time (bench/train_step.py,
# 2-core AMD EPYC without bf16).
RECOMPUTED_LEVELS = 2
SPECIALIST_CHANNELS = {"three-class": 3, "binary": 2}


@dataclass
class ModelConfig:
    """Network settings. ``num_classes`` is C = K + 1 (background included); K = C - 1 specialists.

    ``heads``: "three-class" (CGS), "binary" (one-vs-rest ablation) or "none" (generalist only).
    """

    in_channels: int = 1
    num_classes: int = 4
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropouts: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
    heads: str = "three-class"
    backbone: str = "unet"

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.dropouts = tuple(float(p) for p in self.dropouts)
        if not self.widths or any(w < 1 for w in self.widths) or self.in_channels < 1:
            raise ValueError(f"widths and in_channels must be whole numbers >= 1, got {self.widths}")
        if not all(0.0 <= p < 1.0 for p in self.dropouts):
            raise ValueError(f"dropouts must lie in [0, 1), got {self.dropouts}")
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes must be >= 2 (background + at least one target), got {self.num_classes}"
            )
        if self.heads not in HEAD_TYPES:
            raise ValueError(f"heads must be one of {HEAD_TYPES}, got {self.heads!r}")
        if len(self.widths) != len(self.dropouts):
            raise ValueError(
                f"widths ({len(self.widths)}) and dropouts ({len(self.dropouts)}) differ in length"
            )

    @property
    def num_specialists(self) -> int:
        return 0 if self.heads == "none" else self.num_classes - 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"], data["dropouts"] = list(self.widths), list(self.dropouts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**data)


BackboneFactory = Callable[[ModelConfig], nn.Module]
_BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str, factory: BackboneFactory, *, overwrite: bool = False) -> None:
    """Make ``ModelConfig(backbone=name)`` buildable. The factory's module must set ``out_channels``
    and may set ``size_divisor`` (the multiple H and W must have)."""
    if name in _BACKBONES and not overwrite:
        raise ValueError(f"backbone {name!r} is already registered (pass overwrite=True to replace it)")
    _BACKBONES[name] = factory


def build_backbone(config: ModelConfig) -> nn.Module:
    try:
        factory = _BACKBONES[config.backbone]
    except KeyError:
        raise ValueError(f"unknown backbone {config.backbone!r}; registered: {sorted(_BACKBONES)}") from None
    backbone = factory(config)
    if not isinstance(getattr(backbone, "out_channels", None), int):
        raise TypeError(f"backbone {config.backbone!r} must expose an integer attribute 'out_channels'")
    return backbone


register_backbone("unet", lambda cfg: UNet(cfg.in_channels, cfg.widths, cfg.dropouts))


class NetOutput(NamedTuple):
    """``generalist`` [B, C, H, W]; ``specialists`` [B, K, S, H, W] or None.

    Holds logits when returned by ``CGSNet``; the objective's teacher input holds probabilities.
    """

    generalist: torch.Tensor
    specialists: torch.Tensor | None = None


class CGSNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config)
        features = self.backbone.out_channels
        self.generalist = GeneralistHead(features, config.num_classes)
        self.specialists: SpecialistHeads | None = None
        if config.heads != "none":
            self.specialists = SpecialistHeads(
                features, config.num_classes - 1, SPECIALIST_CHANNELS[config.heads]
            )

    @property
    def size_divisor(self) -> int:
        """H and W of the input must be multiples of this."""
        return int(getattr(self.backbone, "size_divisor", 1))

    def save_memory(self, enabled: bool = True) -> CGSNet:
        """Recompute the full- and half-resolution layers and the specialist heads in backward
        instead of storing them (training only; see ``cgs_engine.model.memory``)."""
        self.memory_saving = enabled
        if hasattr(self.backbone, "checkpoint_levels"):
            self.backbone.checkpoint_levels = RECOMPUTED_LEVELS if enabled else 0
        return self

    def forward(self, x: torch.Tensor, specialists: bool = True) -> NetOutput:
        features = self.backbone(x)
        spec = None
        if specialists and self.specialists is not None:
            spec = run_checkpointed(self.specialists, features, enabled=getattr(self, "memory_saving", False))
        return NetOutput(self.generalist(features), spec)


def build_model(config: ModelConfig) -> CGSNet:
    return CGSNet(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
