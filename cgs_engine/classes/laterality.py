"""Left/right pairs of classes, and what a mirror image does to their labels.

A mirror image of a head shows the patient's left parotid where the right one was. Training on
mirrored slices without swapping the pair's labels teaches "LeftParotid" on both sides, so the
network can only tell the two apart by faint asymmetries and its choice between them stays close
to a coin toss (TotalSegmentator turns mirroring off for this reason). Swapping the pair on every
mirrored sample keeps the labels consistent with what the network sees: "RightParotid" is always
the parotid on the image's left when the face is up.

Pairs are found from the class names (``LeftParotid``/``RightParotid``, ``Parotid_L``/``Parotid_R``,
``left kidney``/``right kidney``, ``Lung_Left``...): two names pair when they differ only by a side
word (left/right, or a lone L/R token at the start or end) and the rest matches, case-insensitively.
A training setting can give the pairs explicitly for names the rule cannot read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cgs_engine.errors import CGSError

# How training treats mirror images: "swap" the pairs' labels (default), "off" draws no mirror at all
# where a pair exists, "keep" leaves labels as they are (the reference's behaviour, wrong for pairs).
MIRROR_MODES = ("swap", "off", "keep")

_SIDE_WORDS = {"left": "left", "right": "right", "l": "left", "r": "right", "lt": "left", "rt": "right"}
_LONG_SIDES = ("left", "right")


class LateralityError(CGSError):
    """Left/right pairs that do not fit the class table; one line."""


def _tokens(name: str) -> list[str]:
    """Words of a class name: split at separators and at lower-to-upper case changes."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [token.lower() for token in re.split(r"[\s_\-./]+", spaced) if token]


def _side_and_base(name: str) -> tuple[str, tuple[str, ...]] | None:
    """('left' | 'right', the other words) when the name names one side exactly once, else None."""
    tokens = _tokens(name)
    positions = []
    for index, token in enumerate(tokens):
        if token in _LONG_SIDES:
            positions.append(index)
        elif token in _SIDE_WORDS and index in (0, len(tokens) - 1) and len(tokens) > 1:
            positions.append(index)  # a lone L / R / Lt / Rt only at either end ("L_Parotid", "Parotid_R")
    if len(positions) != 1:
        return None
    index = positions[0]
    base = tuple(tokens[:index] + tokens[index + 1 :])
    return (_SIDE_WORDS[tokens[index]], base) if base else None


def lateral_pairs(class_names: Sequence[str]) -> list[tuple[int, int]]:
    """(right id, left id) for every pair of foreground classes that differ only by side."""
    sides: dict[tuple[str, ...], dict[str, list[int]]] = {}
    for class_id, name in enumerate(class_names):
        if class_id == 0:
            continue
        parsed = _side_and_base(str(name))
        if parsed is not None:
            side, base = parsed
            sides.setdefault(base, {}).setdefault(side, []).append(class_id)
    pairs = []
    for found in sides.values():
        rights, lefts = found.get("right", []), found.get("left", [])
        if len(rights) == 1 and len(lefts) == 1:  # an ambiguous base (two "left X") pairs nothing
            pairs.append((rights[0], lefts[0]))
    return sorted(pairs)


def resolve_pairs(
    class_names: Sequence[str], setting: str | Sequence[Sequence[str]]
) -> list[tuple[int, int]]:
    """Pairs from a setting: "auto" (from the names) or explicit [[name, name], ...] (may be empty)."""
    if isinstance(setting, str):
        if setting != "auto":
            raise LateralityError(
                f"lateral_pairs must be 'auto' or a list of [name, name] pairs, not {setting!r}"
            )
        return lateral_pairs(class_names)
    index = {str(name): class_id for class_id, name in enumerate(class_names)}
    pairs, seen = [], set()
    for pair in setting:
        if isinstance(pair, str) or len(pair) != 2:
            raise LateralityError(f"lateral_pairs: each pair must be two class names, got {pair!r}")
        ids = []
        for name in pair:
            if str(name) not in index or index[str(name)] == 0:
                raise LateralityError(
                    f"lateral_pairs: {name!r} is not a foreground class of {list(class_names)}"
                )
            ids.append(index[str(name)])
        if ids[0] == ids[1] or seen & set(ids):
            raise LateralityError(f"lateral_pairs: a class may be in one pair only ({pair!r})")
        seen.update(ids)
        pairs.append((ids[0], ids[1]))
    return sorted(pairs)


def mirror_permutation(num_classes: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Class id -> class id after a mirror: each pair swapped, every other class kept."""
    table = list(range(num_classes))
    for a, b in pairs:
        table[a], table[b] = b, a
    return table
