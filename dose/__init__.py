"""Dose: the per-exposure dose record and everything galacto computes from it.

A leaf package (it imports nothing else of ours): the record type (:mod:`dose.record`), the
Dance mean glandular dose model (:mod:`dose.dance`), the physicist's tables
(:mod:`dose.tables`), plausibility on ingest (:mod:`dose.plausibility`), the independent Dance
check (:mod:`dose.check`), reference levels (:mod:`dose.levels`), the one per-breast total
(:mod:`dose.totals`) and the policy that applies them all to one exposure (:mod:`dose.policy`).
``acquisition``, ``dicom_nodes``, the simulators and the CLI all import it.
"""

import logging

from dose.record import ExposureRecord, ExposureSink, Source

__all__ = ["ExposureRecord", "ExposureSink", "Source"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
