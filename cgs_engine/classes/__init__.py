"""What the classes of a model are: names, and which of them are left/right pairs."""

from cgs_engine.classes.laterality import (
    MIRROR_MODES,
    LateralityError,
    lateral_pairs,
    mirror_permutation,
    resolve_pairs,
)

__all__ = ["MIRROR_MODES", "LateralityError", "lateral_pairs", "mirror_permutation", "resolve_pairs"]
