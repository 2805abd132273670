"""DICOM nodes: SCPs toward the mammography unit, SCUs toward the RIS and PACS."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__: list[str] = []
