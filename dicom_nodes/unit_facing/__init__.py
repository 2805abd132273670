"""Toward the mammography unit: the SCPs it talks to and what they keep.

The Modality Worklist, MPPS and Storage SCPs on one AE and one port (:mod:`.server`), who may
associate (:mod:`.admission`), the worklist we serve (:mod:`.worklist_store`, matched by
:mod:`.mwl_matching`), the unit's MPPS instances (:mod:`.mpps_store`), what the unit stored and
what was held back (:mod:`.received_objects`), and the checks of what arrives
(:mod:`.pixel_data`, :mod:`.value_lengths`).
"""
