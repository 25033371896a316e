"""Organs known by name: their TG-263 structure name and SNOMED CT identity.

A model's classes are plain names ("RightParotid"); DICOM exports need the standard structure
name (AAPM TG-263, "Parotid_R") and a coded identity (SNOMED CT, with a laterality modifier where
one code covers both sides). An organ that is not known keeps its class name and gets no code.

The codes are those of the DICOM standard's segmentation property tables (PS3.16 CID 7150
"Segmentation Property Categories", CID 7151 "Segmentation Property Types", CID 244 "Laterality"),
taken from pydicom's code dictionary.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import Any

# The organs of OpenKBP's contours: the default class table (`--classes openkbp`) and the bundled samples'.
OPENKBP_CLASS_NAMES = [
    "background",
    "Brainstem",
    "SpinalCord",
    "RightParotid",
    "LeftParotid",
    "Esophagus",
    "Larynx",
    "Mandible",
]


def openkbp_class_names() -> list[str]:
    """Background plus the 7 OpenKBP organs at risk, index = label id in the OpenKBP NIfTI."""
    return list(OPENKBP_CLASS_NAMES)


@dataclass(frozen=True)
class Code:
    """One coded concept: (value, coding scheme designator, meaning), as DICOM writes it."""

    value: str
    scheme: str
    meaning: str

    def to_dict(self) -> dict[str, str]:
        return {"value": self.value, "scheme": self.scheme, "meaning": self.meaning}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Code:
        return cls(value=str(data["value"]), scheme=str(data["scheme"]), meaning=str(data["meaning"]))


@dataclass(frozen=True)
class KnownOrgan:
    tg263: str
    code: Code
    laterality: Code | None = None
    aliases: tuple[str, ...] = ()


def snomed(name: str) -> Code:
    """The SNOMED CT concept pydicom knows as ``codes.SCT.<name>``."""
    # lazy: pydicom costs 0.3 s and only snomed() needs it (classes is on the CLI parser path)
    from pydicom.sr.codedict import codes

    concept = getattr(codes.SCT, name)
    return Code(str(concept.value), str(concept.scheme_designator), str(concept.meaning))


@functools.cache
def anatomical_structure() -> Code:
    """The category of every class: an anatomical structure."""
    return snomed("AnatomicalStructure")


@functools.cache
def known_organs() -> tuple[KnownOrgan, ...]:
    right, left, parotid = snomed("Right"), snomed("Left"), snomed("ParotidGland")
    return (
        KnownOrgan("Brainstem", snomed("BrainStem"), aliases=("brain stem",)),
        KnownOrgan("SpinalCord", snomed("SpinalCord"), aliases=("spinal cord", "cord")),
        KnownOrgan(
            "Parotid_R",
            parotid,
            right,
            aliases=("RightParotid", "Parotid_Rt", "Rt_Parotid", "R_Parotid", "Right Parotid", "Parotid R"),
        ),
        KnownOrgan(
            "Parotid_L",
            parotid,
            left,
            aliases=("LeftParotid", "Parotid_Lt", "Lt_Parotid", "L_Parotid", "Left Parotid", "Parotid L"),
        ),
        KnownOrgan("Esophagus", snomed("Esophagus"), aliases=("oesophagus",)),
        KnownOrgan("Larynx", snomed("Larynx")),
        KnownOrgan("Bone_Mandible", snomed("Mandible"), aliases=("Mandible",)),
        KnownOrgan("Heart", snomed("Heart")),
        KnownOrgan("Trachea", snomed("Trachea")),
        KnownOrgan("A_Aorta", snomed("Aorta"), aliases=("Aorta",)),
    )


def normalise_name(name: str) -> str:
    """Lower case without separators, so "Parotid_R", "parotid r" and "PAROTID-R" compare equal, in
    any script: keeping a-z and 0-9 only made every Cyrillic, Greek or CJK name "", and an outline
    "Тело" was imported as the table's "Ствол мозга" (both ""). Marks are dropped from Latin, Greek
    and Cyrillic letters ("Rückenmark" = "Ruckenmark") and the optional Arabic and Hebrew vowel
    points only: elsewhere a mark changes the word (kana voicing: しんぞう heart, じんぞう kidney;
    Indic vowel signs; the hamza)."""
    kept: list[str] = []
    for char in unicodedata.normalize("NFKD", name).casefold():
        if unicodedata.category(char).startswith("M"):  # a mark on the letter before it
            if kept and not _mark_drops(char, kept[-1]):
                kept.append(char)
        elif char.isalnum():
            kept.append(char)
    return "".join(kept)


# Arabic short vowels, tanween, shadda, sukun, dagger alef; Hebrew vowel points and dagesh: written
# or left out at will. Not the hamza (a consonant: أ is not ا) nor the shin and sin dots.
OPTIONAL_POINTS = frozenset(
    [*map(chr, range(0x064B, 0x0653)), "\u0670", *map(chr, range(0x05B0, 0x05BE)), "\u05bf", "\u05c7"]
)


def _mark_drops(mark: str, letter: str) -> bool:
    """Whether ``mark`` on ``letter`` is left out of the comparison: accents on Latin, Greek and
    Cyrillic letters; Arabic and Hebrew optional points."""
    if mark in OPTIONAL_POINTS:
        return True
    return unicodedata.name(letter, "").startswith(("LATIN", "GREEK", "CYRILLIC"))


@functools.cache
def _by_name() -> dict[str, KnownOrgan]:
    return {
        normalise_name(alias): organ for organ in known_organs() for alias in (organ.tg263, *organ.aliases)
    }


def known_organ(name: str) -> KnownOrgan | None:
    key = normalise_name(name)
    return _by_name().get(key) if key else None
