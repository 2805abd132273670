"""DICOM datasets galacto builds and reads: pure functions, no network, no database.

Coded concepts (:mod:`.codes`), the MPPS toward the RIS (:mod:`.mpps_builders`), the dose SR
(:mod:`.rdsr`), the Contrast/Bolus module (:mod:`.contrast`), the coercion of forwarded objects
(:mod:`.coercion`) and the exposure records read from what the unit sends (:mod:`.dose_extract`).
"""
