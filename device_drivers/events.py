"""Injector event and termination vocabulary: DICOM CID 71 / CID 67 (DCM scheme) and SCT.

Pure constants, shared by the driver (which reports events) and the injector simulator (which
queues them for ``XEV``). See domain/injector-protocol.md §7.
"""

from __future__ import annotations

import enum


class InjectorEvent(enum.Enum):
    """An injector event: ``(code, scheme, meaning)``."""

    PRESSURE_WARNING = ("130150", "DCM", "Pressure above warning limit")
    PRESSURE_ADJUSTMENT = ("130151", "DCM", "Pressure above adjustment limit")
    FLOW_WARNING = ("130152", "DCM", "Flow rate above warning limit")
    FLOW_ADJUSTMENT = ("130153", "DCM", "Flow rate above adjustment limit")
    TERMINATED_OPERATOR = ("130154", "DCM", "Terminated by operator request")
    TERMINATED_PRESSURE = ("130156", "DCM", "Terminated: pressure above termination limit")
    TERMINATED_FLOW = ("130157", "DCM", "Terminated: flow rate above termination limit")
    TERMINATED_EXCESSIVE_PAUSE = ("130158", "DCM", "Terminated: excessive pause")
    TERMINATED_COMM_LOSS = ("130159", "DCM", "Terminated: injector communication loss")
    TERMINATED_INJECTOR_FAILURE = ("130160", "DCM", "Terminated: unspecified injector failure")
    SYRINGE_ATTACHED = ("130163", "DCM", "Syringe attached")
    SYRINGE_DETACHED = ("130164", "DCM", "Syringe detached")
    AIR_DETECTED = ("130175", "DCM", "Air detected")
    TERMINATED_AIR = ("130176", "DCM", "Terminated: air detected")
    TERMINATED_BY_SCANNER = ("130177", "DCM", "Terminated by scanner")
    TERMINATED_CONSUMABLE_REMOVAL = ("130179", "DCM", "Terminated: consumable removal")
    PROGRAMMED_HOLD = ("130266", "DCM", "Programmed hold started")
    MANUAL_HOLD = ("130267", "DCM", "Manual hold started")
    MANUAL_RESUME = ("130268", "DCM", "Manual resume from hold")
    TERMINATED_HOLD_TIMEOUT = ("130269", "DCM", "Terminated: hold timeout")
    EQUIPMENT_FAILURE = ("110501", "DCM", "Equipment failure")
    COMPLETE = ("255594003", "SCT", "Complete")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def scheme(self) -> str:
        return self.value[1]

    @property
    def meaning(self) -> str:
        return self.value[2]

    @classmethod
    def from_code(cls, code: str) -> InjectorEvent:
        for member in cls:
            if member.code == code:
                return member
        raise ValueError(f"unknown injector event code {code!r}")
