"""Toward the hospital: the SCUs that talk to the RIS and the PACS, and the durable outbox.

The association every SCU shares (:mod:`.scu`), the RIS worklist query (:mod:`.mwl_scu`) and its
local copy (:mod:`.ris_orders`), and the outbox (:mod:`.outbox`) with the senders that register
their message kinds with it: MPPS (:mod:`.mpps_scu`), C-STORE (:mod:`.store_scu`) and Storage
Commitment (:mod:`.commitment`).
"""
