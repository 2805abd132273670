"""Simulators of the equipment around the controller: injector, mammography unit, RIS, PACS.

Real peers on a pty, socket:// or loopback DICOM, used by the tests and the demo.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__: list[str] = []
