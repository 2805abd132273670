"""The Contrast/Bolus module of post-contrast images (PS3.3 C.7.6.4; dicom.md §5).

One :class:`ContrastAdministration` holds every injection given before an image; the module
carries the agent (iohexol, SCT 109218004), the route ("INTRADUCTAL"; no intraductal code
exists, the nearest is intraluminal route 37737002), the total volume and dose in mL, the start
of the first and the stop of the last injection, and one flow rate (mL/s) and flow duration (s)
per injection. Written by the simulated unit into its images and by the controller into the
forwarded post-contrast images that lack it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_nodes.datasets import codes

ROUTE = "INTRADUCTAL"
INGREDIENT = "IODINE"


class ContrastError(ValueError):
    """A contrast administration that cannot be written."""


@dataclass(frozen=True)
class Injection:
    """One contrast injection as the Contrast/Bolus module reports it."""

    volume_ml: float
    start: dt.time
    stop: dt.time
    flow_rate_ml_s: float
    flow_duration_s: float


@dataclass(frozen=True)
class ContrastAdministration:
    """Contrast given before a post-contrast image (iohexol 300 mg I/mL, intraductal)."""

    injections: tuple[Injection, ...]
    agent: str = "Iohexol 300"
    concentration_mg_ml: float = 300.0

    @property
    def total_ml(self) -> float:
        return round(sum(i.volume_ml for i in self.injections), 3)


def decimal_string(value: float, places: int = 4) -> str:
    """A DS string (≤ 16 characters) without a trailing zero pile."""
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return text or "0"


def set_contrast_bolus(ds: Dataset, contrast: ContrastAdministration) -> None:
    """Write the Contrast/Bolus module (C.7.6.4): one value per injection in the rates."""
    injections = contrast.injections
    if not injections:
        raise ContrastError("a contrast administration needs at least one injection")
    ds.ContrastBolusAgent = contrast.agent
    ds.ContrastBolusAgentSequence = codes.code_sequence([codes.IOHEXOL])
    ds.ContrastBolusRoute = ROUTE
    ds.ContrastBolusAdministrationRouteSequence = codes.code_sequence([codes.ROUTE_INTRALUMINAL])
    ds.ContrastBolusVolume = decimal_string(contrast.total_ml, 3)
    ds.ContrastBolusStartTime = injections[0].start.strftime("%H%M%S")
    ds.ContrastBolusStopTime = injections[-1].stop.strftime("%H%M%S")
    ds.ContrastBolusTotalDose = decimal_string(contrast.total_ml, 3)
    ds.ContrastFlowRate = [decimal_string(i.flow_rate_ml_s, 4) for i in injections]
    ds.ContrastFlowDuration = [decimal_string(i.flow_duration_s, 1) for i in injections]
    ds.ContrastBolusIngredient = INGREDIENT
    ds.ContrastBolusIngredientConcentration = decimal_string(contrast.concentration_mg_ml, 1)
