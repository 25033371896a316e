"""Review stage: rank uncertain regions, track what a user accepted or edited, autosave the session."""

from cgs_engine.review.regions import (
    Region,
    busiest_slices,
    component_mask,
    find_regions,
    find_regions_with_map,
    slice_profile,
)
from cgs_engine.review.session import (
    Session,
    SessionError,
    image_fingerprint,
    load_session,
    save_session,
    session_path_for,
)
from cgs_engine.review.state import STATUSES, ReviewState

__all__ = [
    "STATUSES",
    "Region",
    "ReviewState",
    "Session",
    "SessionError",
    "busiest_slices",
    "component_mask",
    "find_regions",
    "find_regions_with_map",
    "image_fingerprint",
    "load_session",
    "save_session",
    "session_path_for",
    "slice_profile",
]
