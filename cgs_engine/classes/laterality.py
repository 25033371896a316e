"""Left/right pairs of classes, and what a mirror image does to their labels.

A mirror image of a head shows the patient's left parotid where the right one was. Training on
mirrored slices without swapping the pair's labels teaches "LeftParotid" on both sides, so the
network can only tell the two apart by faint asymmetries and its choice between them stays close
to a coin toss (TotalSegmentator turns mirroring off for this reason). Swapping the pair on every
mirrored sample keeps the labels consistent with what the network sees: "RightParotid" is always
the parotid on the image's left when the face is up.

Pairs are found from the class names (``LeftParotid``/``RightParotid``, ``Parotid_L``/``Parotid_R``,
``left kidney``/``right kidney``, ``Lung_Left``, ``Kidney (L)``, ``Parotid_L_PRV05``, ``Niere
links``/``rechts``, ``Parotis sin``/``dx``, ``Parotide gauche``, ``左肾``...): two names pair when
they differ only by a side word (a spelled-out side anywhere, or a lone L/R/Lt/Rt/sin/dx/li/re
token at the start or end, a PRV margin suffix aside) and the rest matches, case-insensitively. A
training setting can give the pairs explicitly for names the rule cannot read (``LParotid``: a
run of capitals is one word, as in ``LVendo``, ``LCx`` and ``LAD``, which name no side).

Two kinds of sided names are not mirror twins. Heart chambers (left/right ventricle, atrium), the
coronary arteries and the liver's lobes are named by their anatomy, not by the side of the body
they lie on: a mirrored heart's left ventricle is still the left ventricle (the chamber the
myocardium encloses), so their labels stay as they are. And a sided class without its partner
(``Parotid_L`` alone, or a name the rule pairs with none) cannot be kept consistent under a mirror
at all: mirrored, it would be taught on both sides. With such a class, mirror images are not
drawn (:func:`mirror_plan`; the run says so at its start).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cgs_engine.classes.organs import normalise_name
from cgs_engine.errors import CGSError

# How training treats mirror images: "swap" the pairs' labels (default), "off" draws no mirror at all
# where a pair exists, "keep" leaves labels as they are (the reference's behaviour, wrong for pairs).
MIRROR_MODES = ("swap", "off", "keep")


# Spelled-out sides, read anywhere in a name (English, German/Dutch, Latin, Spanish, Italian, French,
# Portuguese, Polish, Russian); accents are dropped before comparing.
_LEFT_WORDS = "left links sinister sinistra sinistrum sinistro izquierdo izquierda gauche esquerdo esquerda"
_LEFT_WORDS += " lewy lewa lewe левый левая левое"
_RIGHT_WORDS = "right rechts dexter dextra dextrum destro destra derecho derecha droite droit direito direita"
_RIGHT_WORDS += " prawy prawa prawe правый правая правое"
# compared as organ names are (normalise_name): accents dropped from Latin and Cyrillic letters
# alike in the words and in the names, so "левый" (й) is matched however it is encoded
_LONG_SIDES = {normalise_name(word): "left" for word in _LEFT_WORDS.split()}
_LONG_SIDES |= {normalise_name(word): "right" for word in _RIGHT_WORDS.split()}
# Abbreviations, read only as a lone token at either end ("L_Parotid", "Parotid_R", "Niere li").
_SHORT_SIDES = {
    "l": "left",
    "r": "right",
    "lt": "left",
    "rt": "right",
    "sin": "left",
    "sx": "left",
    "dx": "right",
    "li": "left",
    "re": "right",
}
_CJK_SIDES = {"左": "left", "右": "right"}  # written before the organ: 左肾, 右腎臓
# Trailing tokens of a planning-risk-volume margin ("Parotid_L_PRV05", "Cochlea_R_PRV_3mm"): the
# side before them still counts as at the end.
_MARGIN = re.compile(r"^(prv\d*|\d+(mm)?)$")
# Names whose side is their anatomy, not their side of the body: never swapped by a mirror (heart
# chambers, coronary arteries, liver lobes; in the languages whose side words are read above).
_ANATOMICAL_WORDS = """atrium atria atrial ventricle ventricles ventricular coronary liver hepatic appendage
    ventrikel vorhof herzkammer kammer koronar koronararterie leber leberlappen
    ventriculus auricula hepar hepatis ventriculo atrio coronaria higado hepatico
    ventricolo fegato ventricule oreillette coronaire foie figado
    komora przedsionek watroba желудочек предсердие печень"""
_ANATOMICAL_SIDES = {normalise_name(word) for word in _ANATOMICAL_WORDS.split()}
# "lateral ventricle left" (the brain's) is a mirror twin
_BRAIN_WORDS = {"lateral", "lat", "lateralis", "laterale", "brain", "cerebral", "cerebri"}


class LateralityError(CGSError):
    """Left/right pairs that do not fit the class table; one line."""


def _tokens(name: str) -> list[str]:
    """Words of a class name, lower case without accents: split at separators and at lower-to-upper
    case changes. A run of capitals stays one word: "LVendo", "LCx" and "LAD" name no side."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [normalise_name(token) for token in re.split(r"[\s_\-./()\[\],;:]+", spaced) if token]


def _side_and_base(name: str) -> tuple[str, tuple[str, ...]] | None:
    """('left' | 'right', the other words) when the name names one side exactly once, else None."""
    tokens = _tokens(name)
    last = len(tokens) - 1
    while last > 0 and _MARGIN.match(tokens[last]):
        last -= 1
    positions = []
    for index, token in enumerate(tokens):
        if token in _LONG_SIDES:
            positions.append((index, _LONG_SIDES[token]))
        elif token in _SHORT_SIDES and index in (0, last) and last > 0:
            positions.append((index, _SHORT_SIDES[token]))
    if not positions and tokens and tokens[0][0] in _CJK_SIDES and len(tokens[0]) > 1:
        return _CJK_SIDES[tokens[0][0]], (tokens[0][1:], *tokens[1:])
    if len(positions) != 1:
        return None
    index, side = positions[0]
    base = tuple(tokens[:index] + tokens[index + 1 :])
    return (side, base) if base else None


def _anatomical(base: tuple[str, ...]) -> bool:
    words = set(base)
    return bool(words & _ANATOMICAL_SIDES) and not words & _BRAIN_WORDS


def sided_classes(class_names: Sequence[str]) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Foreground class id -> (side, the other words) for every name that names a side of the body
    (heart chambers and the like, whose side is their anatomy, left out)."""
    found = {}
    for class_id, name in enumerate(class_names):
        parsed = None if class_id == 0 else _side_and_base(str(name))
        if parsed is not None and not _anatomical(parsed[1]):
            found[class_id] = parsed
    return found


def lateral_pairs(class_names: Sequence[str]) -> list[tuple[int, int]]:
    """(right id, left id) for every pair of foreground classes that differ only by side."""
    sides: dict[tuple[str, ...], dict[str, list[int]]] = {}
    for class_id, (side, base) in sided_classes(class_names).items():
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


@dataclass(frozen=True)
class MirrorPlan:
    """What training does with mirror images for one class table."""

    mirror: bool  # draw mirror images at all
    table: list[int] | None  # class id -> class id on a mirrored sample; None: labels kept
    note: str  # one line for the run's start: the pairs swapped, or why no mirror is drawn


def mirror_plan(class_names: Sequence[str], setting: str | Sequence[Sequence[str]], mode: str) -> MirrorPlan:
    """Mirror images for these classes under ``lateral_pairs`` ``setting`` and ``mirror`` ``mode``.

    The pairs are those the names give, plus the explicit ones of the setting (which win for the
    classes they name). A sided class left without a partner turns mirror images off: no label
    table keeps it on its side.
    """
    names = [str(name) for name in class_names]
    explicit = [] if setting == "auto" else resolve_pairs(names, setting)
    taken = {class_id for pair in explicit for class_id in pair}
    pairs = sorted(explicit + [pair for pair in lateral_pairs(names) if not taken & set(pair)])
    shown = ", ".join(f"{names[right]}/{names[left]}" for right, left in pairs)
    if mode == "keep":
        return MirrorPlan(True, None, "mirror images keep every label (mirror: keep)")
    paired = {class_id for pair in pairs for class_id in pair}
    alone = [class_id for class_id in sided_classes(names) if class_id not in paired]
    if alone:
        lone = ", ".join(names[i] for i in alone)
        return MirrorPlan(
            False,
            None,
            f"no mirror images: {lone} names a side but has no partner class to swap with "
            "(name both sides alike, or set lateral_pairs)",
        )
    if not pairs:
        kept = [n for i, n in enumerate(names) if i and (p := _side_and_base(n)) and _anatomical(p[1])]
        why = f"{', '.join(kept)} named by anatomy, kept as labelled" if kept else "no left/right classes"
        return MirrorPlan(True, None, f"mirror images on ({why})")
    if mode == "off":
        return MirrorPlan(False, None, f"no mirror images (mirror: off; pairs {shown})")
    return MirrorPlan(True, mirror_permutation(len(names), pairs), f"mirror images swap {shown}")
