"""The vocabulary of dose surveys: view names and codes, element symbols, thickness bands.

What the physicist's exports and reports need to speak the forms physicists already use
(dose.md §5): OpenREM's mammography CSV names views by their CID 4014 code meaning and targets
and filters by element symbol; the NHSBSP/NCCPM survey form writes a view code of the
laterality letter and a short view name (``RCC``, ``LOB`` …, a number appended for a repeat
of the same view in the exam: ``RCC2``); survey tables group breasts in 10 mm thickness bands.
"""

from __future__ import annotations

from collections.abc import Mapping

#: CID 4014 (PS3.16) code meanings, by the short name of the view (``dose.levels.VIEW_NAMES``).
VIEW_MEANINGS: Mapping[str, str] = {
    "CC": "cranio-caudal",
    "MLO": "medio-lateral oblique",
    "ML": "medio-lateral",
    "LM": "latero-medial",
    "LMO": "latero-medial oblique",
    "XCCL": "cranio-caudal exaggerated laterally",
    "XCCM": "cranio-caudal exaggerated medially",
    "FB": "caudo-cranial (from below)",
    "SIO": "superolateral to inferomedial oblique",
    "ISO": "inferomedial to superolateral oblique",
}

#: The NHSBSP survey form's view codes (OpenREM ``mg_csv_nhsbsp``): MLO is "OB".
NHSBSP_VIEWS: Mapping[str, str] = {
    "CC": "CC",
    "MLO": "OB",
    "ML": "ML",
    "LM": "LM",
    "LMO": "LMO",
    "FB": "FB",
    "SIO": "SIO",
    "ISO": "ISO",
    "XCCL": "XCCL",
    "XCCM": "XCCM",
}

#: Acquisition protocols the NHSBSP survey leaves out (OpenREM ``mg_csv_nhsbsp``; dose.md §5).
NHSBSP_EXCLUDED_PROTOCOL_WORDS = (
    "scout",
    "postclip",
    "prefire",
    "biopsy",
    "postfire",
    "stereo",
    "specimen",
    "artefact",
)

#: Anode and filter materials as DICOM writes them (0018,1191 / 0018,7050) → element symbols.
ELEMENT_SYMBOLS: Mapping[str, str] = {
    "MOLYBDENUM": "Mo",
    "RHODIUM": "Rh",
    "TUNGSTEN": "W",
    "SILVER": "Ag",
    "ALUMINUM": "Al",
    "ALUMINIUM": "Al",
    "COPPER": "Cu",
}

#: Width of the compressed-thickness bands of survey tables and binned plots.
BAND_MM = 10

LATERALITY_MEANINGS: Mapping[str, str] = {"R": "Right", "L": "Left", "B": "Both"}


def element_symbol(material: str | None) -> str | None:
    """``TUNGSTEN`` → ``W``; an unknown material as written; None for none."""
    if not material:
        return None
    return ELEMENT_SYMBOLS.get(material.strip().upper(), material.strip())


def band_label(band_mm: float | None) -> str:
    """``50`` → ``50–59 mm`` (a band holds [low, low + 10) mm)."""
    if band_mm is None:
        return "unknown"
    low = int(band_mm)
    return f"{low}–{low + BAND_MM - 1} mm"


class NhsbspViewCodes:
    """The view codes of one exam on the NHSBSP form: the laterality letter and the view's
    code, with 2, 3 … appended to a repeat of a view already in the exam (``RCC``, ``RCC2``)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def next_code(self, laterality: str | None, view_name: str | None) -> str | None:
        """The code of the exam's next exposure, or None when it has no side or no view."""
        if laterality not in ("L", "R") or not view_name:
            return None
        code = f"{laterality}{NHSBSP_VIEWS.get(view_name, view_name)}"
        number = 1
        candidate = code
        while candidate in self._seen:
            number += 1
            candidate = f"{code}{number}"
        self._seen.add(candidate)
        return candidate


def nhsbsp_excluded(protocol: str | None, view_name: str | None) -> str | None:
    """Why the NHSBSP survey leaves an exposure out (scout, biopsy, specimen …), or None."""
    text = (protocol or "").lower()
    for word in NHSBSP_EXCLUDED_PROTOCOL_WORDS:
        if word in text:
            return f"acquisition protocol contains {word!r}"
    if view_name and "specimen" in view_name.lower():
        return "specimen view"
    return None
