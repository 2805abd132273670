"""The physicist's tools over the dose log: filters, streamed reads, exports, import, report.

- :mod:`.filters`: the filter flags and the one SQL condition they become;
- :mod:`.reader`: the read-only, paged, low-priority reading of the log;
- :mod:`.exports`: ``csv``, ``json``, ``openrem`` and ``nhsbsp``, pseudonymised;
- :mod:`.importer`: MG images and dose reports from folders into the log;
- :mod:`.report`: one self-contained HTML page of plots and tables, aggregated in SQL.

The command line (``galacto dose …``) is in :mod:`acquisition.commands.dose` and
:mod:`acquisition.commands.dose_audit`; the dose arithmetic is in the leaf package ``dose``.
"""

import logging

from .exports import FORMATS, Pseudonyms, write_export
from .filters import ExposureFilter, FilterError, add_filter_arguments, filter_from_args
from .reader import AuditLog, lower_priority

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "FORMATS",
    "AuditLog",
    "ExposureFilter",
    "FilterError",
    "Pseudonyms",
    "add_filter_arguments",
    "filter_from_args",
    "lower_priority",
    "write_export",
]
