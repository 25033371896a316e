"""Network of the CGS method: UNet backbone, generalist head, grouped specialist heads."""

from .heads import GeneralistHead, SpecialistHead, SpecialistHeads
from .network import (
    HEAD_TYPES,
    CGSNet,
    ModelConfig,
    NetOutput,
    build_backbone,
    build_model,
    count_parameters,
    register_backbone,
)
from .unet import UNet

__all__ = [
    "HEAD_TYPES",
    "CGSNet",
    "GeneralistHead",
    "ModelConfig",
    "NetOutput",
    "SpecialistHead",
    "SpecialistHeads",
    "UNet",
    "build_backbone",
    "build_model",
    "count_parameters",
    "register_backbone",
]
