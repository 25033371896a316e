"""What the classes of a model are: names and colours (``checks``), their DICOM identity
(``organs``, ``table``), the class file beside a label map (``files``), and which of them are
left/right pairs (``laterality``)."""

from cgs_engine.classes.laterality import (
    MIRROR_MODES,
    LateralityError,
    MirrorPlan,
    lateral_pairs,
    mirror_permutation,
    mirror_plan,
    resolve_pairs,
    sided_classes,
)

__all__ = [
    "MIRROR_MODES",
    "LateralityError",
    "MirrorPlan",
    "lateral_pairs",
    "mirror_permutation",
    "mirror_plan",
    "resolve_pairs",
    "sided_classes",
]
