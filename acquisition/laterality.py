"""The breast an order is for, read from its words (issue 8, layer 4: wrong side is not silent).

The Modality Worklist has no laterality key: a RIS writes the side into text. The order's side is
looked for in the Requested Procedure Code Sequence (code meanings), the Requested Procedure
Description, the Scheduled Protocol Code Sequence (code meanings) and the Scheduled Procedure Step
Description, against a configurable list of side words (``ris.laterality_terms``): each entry is
``word=L`` or ``word=R``. Words match case-insensitively as whole words (``left`` is found in
"Galactography, left breast", not in "leftover"); a single letter counts only as a whole token
(``L`` in "Galactography L" or "L-CC", never the L of "MLO"). An order whose words name both
sides has no recognisable side: it is opened only with a side chosen explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dicom_nodes.hospital.mwl_scu import WorklistItem

SIDES = ("L", "R")
SIDE_NAMES = {"L": "left", "R": "right"}

#: English, German and French, plus the single letters.
DEFAULT_TERMS: tuple[str, ...] = (
    "left=L",
    "links=L",
    "linke=L",
    "linken=L",
    "gauche=L",
    "L=L",
    "right=R",
    "rechts=R",
    "rechte=R",
    "rechten=R",
    "droit=R",
    "droite=R",
    "R=R",
)


def parse_terms(entries: Iterable[str]) -> dict[str, str]:
    """``["left=L", …]`` → ``{"left": "L", …}`` (words lower-cased); :class:`ValueError` naming
    the entry that is not ``word=L`` or ``word=R`` with a word of letters."""
    terms: dict[str, str] = {}
    for entry in entries:
        word, sep, side = entry.partition("=")
        word, side = word.strip(), side.strip().upper()
        if not sep or side not in SIDES or not re.fullmatch(r"[^\W\d_]+", word):
            raise ValueError(f"{entry!r} is not word=L or word=R")
        if terms.get(word.lower(), side) != side:
            raise ValueError(f"{word!r} is given for both sides")
        terms[word.lower()] = side
    return terms


@dataclass(frozen=True)
class OrderSide:
    """What an order's words say about its side. ``side`` is None when no side word was found
    or the words name both sides; ``evidence`` lists each match as ``"<where>: <word>"``."""

    side: str | None
    evidence: tuple[str, ...] = ()

    @property
    def conflicting(self) -> bool:
        return self.side is None and bool(self.evidence)


def _tokens(text: str) -> list[str]:
    """Whole words of letters (Unicode): digits, punctuation and spaces separate them, so a
    single letter is matched only when it stands alone ("L-CC", not "MLO")."""
    return re.findall(r"[^\W\d_]+", text)


def order_side(item: WorklistItem, terms: Mapping[str, str]) -> OrderSide:
    """The side the order's words name (see the module docstring)."""
    sources = (
        *(("Requested Procedure Code", c.meaning) for c in item.requested_procedure_codes),
        ("Requested Procedure Description", item.requested_procedure_description),
        *(("Scheduled Protocol Code", c.meaning) for c in item.protocol_codes),
        ("Scheduled Procedure Step Description", item.sps_description),
    )
    evidence: list[str] = []
    found: set[str] = set()
    for where, text in sources:
        for token in _tokens(text or ""):
            side = terms.get(token.lower())
            if side is None:
                continue
            found.add(side)
            evidence.append(f"{where}: {token}")
    side = found.pop() if len(found) == 1 else None
    return OrderSide(side, tuple(evidence))
