"""Demo galactography orders for the simulated RIS, deterministic with a seed.

Each order is one Requested Procedure with one Scheduled Procedure Step, turned into a Modality
Worklist item with every return key of PS3.4 Table K.6-1 that dicom.md §3 lists. The first
orders use a curated set of patients that exercise what a worklist client must get right:
names in ISO_IR 100 (``Müller^Anna``), in ISO_IR 192 (``Łukasiewicz^Zofia``, outside Latin-1),
Greek in ISO_IR 126, Japanese with ISO 2022 IR 87 code extensions (PS3.5 Annex H), an iodinated
contrast allergy, a possible pregnancy and medical alerts. Further orders draw synthetic
patients from name lists. Modality Worklist has no laterality key: the side is only in the
Requested Procedure Description and the (local) meaning of the Requested Procedure Code.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_nodes.datasets.codes import DUCTOGRAPHY, MAMMARY_DUCTOGRAM, Code

#: UID root for the simulator's demo Study Instance UIDs (pydicom's root + a fixed suffix). The
#: simulated RIS stands for the hospital's RIS, which makes its own UIDs: its own root, not
#: galacto's ``site.uid_root``.
DEMO_UID_PREFIX = "1.2.826.0.1.3680043.8.498.77."

#: Pregnancy Status (0010,21C0) enumerated values (PS3.3 C.7.1.3).
NOT_PREGNANT = 1
POSSIBLY_PREGNANT = 2
PREGNANCY_UNKNOWN = 4

ROUTINE = "ROUTINE"
HIGH = "HIGH"

#: Requested Contrast Agent (0032,1070): free text in the order.
CONTRAST_AGENT = "Iohexol 300 mgI/mL (Omnipaque 300), intraductal"
SIDES = {"R": "right", "L": "left"}

INDICATIONS: tuple[str, ...] = (
    "Spontaneous single-duct bloody nipple discharge",
    "Unilateral serous nipple discharge, single duct",
    "Persistent clear nipple discharge, normal mammogram",
    "Single-duct discharge, cytology with atypical cells",
    "Suspected intraductal papilloma on ultrasound",
)


@dataclass(frozen=True)
class DemoPatient:
    """One patient of the demo RIS. ``name`` is the full PN value (with ideographic groups)."""

    patient_id: str
    name: str
    character_set: tuple[str, ...]
    birth_date: str
    weight_kg: float
    allergies: str = ""
    medical_alerts: str = ""
    pregnancy_status: int = NOT_PREGNANT


#: The curated patients the first orders use, in order (see the module docstring).
CURATED_PATIENTS: tuple[DemoPatient, ...] = (
    DemoPatient("GAL-0001", "Müller^Anna", ("ISO_IR 100",), "19710312", 68.0),
    DemoPatient(
        "GAL-0002",
        "Łukasiewicz^Zofia",
        ("ISO_IR 192",),
        "19680527",
        61.5,
        allergies="Iodinated contrast media (urticaria 2019)",
        medical_alerts="Contrast allergy: premedication required",
    ),
    DemoPatient("GAL-0003", "Παπαδοπούλου^Ελένη", ("ISO_IR 126",), "19820904", 57.0),
    DemoPatient(
        "GAL-0004",
        "Yamada^Hanako=山田^花子=やまだ^はなこ",
        ("", "ISO 2022 IR 87"),
        "19790118",
        52.0,
        pregnancy_status=POSSIBLY_PREGNANT,
    ),
    DemoPatient(
        "GAL-0005",
        "Smith^Jane",
        ("ISO_IR 100",),
        "19650730",
        74.0,
        allergies="Latex",
        medical_alerts="Anticoagulated (apixaban)",
    ),
    DemoPatient(
        "GAL-0006",
        "Dubois^Hélène",
        ("ISO_IR 100",),
        "19880211",
        63.0,
        pregnancy_status=PREGNANCY_UNKNOWN,
    ),
)

_FAMILY_NAMES = ("Jensen", "García", "Novak", "Rossi", "Nowak", "Larsen", "Schäfer", "Brown")
_GIVEN_NAMES = ("Maria", "Ingrid", "Petra", "Sofía", "Ana", "Karin", "Jörg", "Lucy")


@dataclass(frozen=True)
class DemoOrder:
    """One scheduled galactography order (one Requested Procedure, one SPS)."""

    patient: DemoPatient
    accession_number: str
    requested_procedure_id: str
    sps_id: str
    study_instance_uid: str
    start: dt.datetime
    station_ae: str
    side: str  #: "R" or "L"; only in text and code meaning, MWL has no laterality key
    procedure_code: Code
    indication: str
    priority: str
    referring_physician: str = "Referrer^Rita^^Dr"
    performing_physician: str = "Radiologist^Rob^^Dr"
    requesting_physician: str = "Requester^Rhea^^Dr"


def synthetic_patient(number: int, rng: random.Random) -> DemoPatient:
    """A Latin-1 patient for orders beyond the curated set."""
    name = f"{rng.choice(_FAMILY_NAMES)}^{rng.choice(_GIVEN_NAMES)}"
    year = rng.randint(1950, 1995)
    birth = f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    return DemoPatient(
        f"GAL-{number:04d}", name, ("ISO_IR 100",), birth, round(rng.uniform(48, 95), 1)
    )


def generate_orders(
    count: int,
    *,
    seed: int = 0,
    station_ae: str = "GALACTO",
    day: dt.date | None = None,
    first_number: int = 1,
) -> list[DemoOrder]:
    """``count`` orders scheduled on ``day`` (today by default), every 20 min from 08:00.

    The same ``seed`` and ``day`` give the same orders, UIDs included.
    """
    rng = random.Random(seed)
    day = day if day is not None else dt.date.today()
    orders = []
    for offset in range(count):
        number = first_number + offset
        index = number - 1
        if index < len(CURATED_PATIENTS):
            patient = CURATED_PATIENTS[index]
        else:
            patient = synthetic_patient(number, rng)
        slot_min = (index * 20) % (12 * 60)  # a working day of 36 slots, then wraps
        start = dt.datetime.combine(day, dt.time(8)) + dt.timedelta(minutes=slot_min)
        side = rng.choice(("R", "L"))
        orders.append(
            DemoOrder(
                patient=patient,
                accession_number=f"A{day:%y%m%d}{number:05d}",
                requested_procedure_id=f"RP{number:05d}",
                sps_id=f"SPS{number:05d}",
                study_instance_uid=generate_uid(
                    DEMO_UID_PREFIX, entropy_srcs=[str(seed), day.isoformat(), str(number)]
                ),
                start=start,
                station_ae=station_ae,
                side=side,
                procedure_code=rng.choice((DUCTOGRAPHY, MAMMARY_DUCTOGRAM)),
                indication=rng.choice(INDICATIONS),
                priority=HIGH if rng.random() < 0.2 else ROUTINE,
            )
        )
    return orders


def procedure_code_with_side(order: DemoOrder) -> Code:
    """The requested procedure code with the side in its (local) meaning, as RISs do."""
    code = order.procedure_code
    return Code(code.value, code.scheme, f"{code.meaning}, {SIDES[order.side]} breast")


def worklist_item(order: DemoOrder) -> Dataset:
    """The Modality Worklist item of an order (PS3.4 K.6.1.2, Table K.6-1).

    Every return key of dicom.md §3 is present; empty ones are zero-length as the RIS knows
    nothing about them (Pre-Medication, Referenced Study/Patient Sequence).
    """
    patient = order.patient
    side_text = SIDES[order.side]
    ds = Dataset()
    ds.SpecificCharacterSet = list(patient.character_set)
    # -- SOP Common, Patient Identification / Demographic / Medical (K.6.1.2.2-4)
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "GALACTO-RIS"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = "F"
    ds.PatientWeight = f"{patient.weight_kg:g}"
    ds.PregnancyStatus = patient.pregnancy_status
    ds.MedicalAlerts = patient.medical_alerts
    ds.Allergies = patient.allergies
    ds.ReferencedPatientSequence = []
    # -- Imaging Service Request (K.6.1.2.6)
    ds.AccessionNumber = order.accession_number
    ds.ReferringPhysicianName = order.referring_physician
    ds.RequestingPhysician = order.requesting_physician
    ds.ReasonForTheRequestedProcedure = order.indication
    # -- Requested Procedure (K.6.1.2.5)
    ds.RequestedProcedureID = order.requested_procedure_id
    ds.RequestedProcedureDescription = f"Galactography {side_text} breast"
    ds.RequestedProcedureCodeSequence = [procedure_code_with_side(order).to_dataset()]
    ds.RequestedProcedurePriority = order.priority
    ds.StudyInstanceUID = order.study_instance_uid
    ds.ReferencedStudySequence = []
    # -- Scheduled Procedure Step (K.6.1.2.1)
    ds.ScheduledProcedureStepSequence = [scheduled_step(order)]
    return ds


def scheduled_step(order: DemoOrder) -> Dataset:
    """The single Scheduled Procedure Step Sequence item of an order (Table K.6-1)."""
    sps = Dataset()
    sps.ScheduledStationAETitle = order.station_ae
    sps.ScheduledStationName = "MAMMO-1"
    sps.ScheduledProcedureStepLocation = "MAMMO ROOM 1"
    sps.ScheduledProcedureStepStartDate = order.start.strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = order.start.strftime("%H%M%S")
    sps.Modality = "MG"
    sps.ScheduledPerformingPhysicianName = order.performing_physician
    sps.ScheduledProcedureStepDescription = f"Galactography {SIDES[order.side]}"
    sps.ScheduledProtocolCodeSequence = [order.procedure_code.to_dataset()]
    sps.ScheduledProcedureStepID = order.sps_id
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    sps.PreMedication = ""
    sps.RequestedContrastAgent = CONTRAST_AGENT
    return sps


def worklist_items(orders: Sequence[DemoOrder]) -> list[Dataset]:
    return [worklist_item(order) for order in orders]
