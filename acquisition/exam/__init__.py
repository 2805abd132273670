"""The exam: its values (:mod:`.model`), the journal fold (:mod:`.record`), the injection
supervisor (:mod:`.injection`), exposure noting (:mod:`.exposures`), the phases' worklist steps
(:mod:`.worklist`) and the service that runs it (:mod:`.service`).

Only the model is re-exported here: importing the exam's values never loads the service.
"""

from acquisition.exam.model import (
    ContrastRecord,
    ExamError,
    ExamOrder,
    ExamSnapshot,
    JournalUnavailable,
    Patient,
    PhysicianOverride,
)

__all__ = [
    "ContrastRecord",
    "ExamError",
    "ExamOrder",
    "ExamSnapshot",
    "JournalUnavailable",
    "Patient",
    "PhysicianOverride",
]
