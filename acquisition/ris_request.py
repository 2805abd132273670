"""The RIS order, as the unit's worklist offers it (IHE RAD TF-1 Scheduled Workflow).

The worklist galacto serves the unit returns every attribute the RIS gave for the order
(physicians, SPS Location, requested procedure codes, the patient's medical attributes...) in
each of galacto's phase steps (:func:`with_ris_request`), so that the unit can fill its own
headers. Coercion on forward (:mod:`acquisition.hospital_identity`) is the safety net, not the
plan.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from dicom_nodes.datasets.codes import MAMMARY_DUCTOGRAM
from dicom_nodes.hospital.mwl_scu import WorklistItem
from dicom_nodes.unit_facing.worklist_store import InvalidStepError, ScheduledStep, encode_step

log = logging.getLogger(__name__)


def ris_request_attributes(item: WorklistItem, *, contrast: bool) -> dict[str, Any]:
    """The :class:`ScheduledStep` fields the RIS order fills (PS3.4 Table K.6-1)."""
    return {
        "performing_physician": item.scheduled_performing_physician,
        "station_name": item.scheduled_station_name,
        "sps_location": item.sps_location,
        "pre_medication": item.pre_medication,
        "requested_contrast_agent": item.requested_contrast_agent if contrast else "",
        "requested_procedure_codes": item.requested_procedure_codes or (MAMMARY_DUCTOGRAM,),
        "priority": item.priority,
        "referring_physician": item.referring_physician,
        "requesting_physician": item.requesting_physician,
        "patient_weight_kg": item.patient_weight_kg,
        "pregnancy_status": item.pregnancy_status,
        "medical_alerts": item.medical_alerts,
        "allergies": item.allergies,
    }


def with_ris_request(step: ScheduledStep, item: WorklistItem | None) -> ScheduledStep:
    """``step`` completed with what the RIS gave for the order (unchanged when unscheduled).

    A value the unit's worklist cannot carry (too long for its VR, a character the VR does not
    allow: nothing from outside is trusted) is left out and logged by name, never the step.
    """
    if item is None:
        return step
    contrast = bool(step.requested_contrast_agent)
    extras = ris_request_attributes(item, contrast=contrast)
    if contrast and not extras["requested_contrast_agent"]:
        extras["requested_contrast_agent"] = step.requested_contrast_agent
    try:
        encode_step(dataclasses.replace(step, **extras))
    except InvalidStepError:
        for name, value in extras.items():  # keep what fits, one attribute at a time
            try:
                encode_step(dataclasses.replace(step, **{name: value}))
            except InvalidStepError as exc:
                log.warning("the RIS order's %s is not offered to the unit: %s", name, exc)
                continue
            step = dataclasses.replace(step, **{name: value})
        return step
    return dataclasses.replace(step, **extras)
