"""Who galacto is on the wire and in the files it writes (PS3.7 D.3.3.2; PS3.10 7.1).

The Implementation Class UID identifies the software, not the site: it is a constant under the
project's own UID root, the same in every installation (a site's own UIDs are generated under
``site.uid_root``). The Implementation Version Name says which release is talking. Every AE we
create (:func:`dicom_nodes.network.make_ae`) sends both in its A-ASSOCIATE-RQ/-AC, and every file
we write carries them in its File Meta Information (:func:`stamp_file_meta`).
"""

from __future__ import annotations

from importlib import metadata

from pydicom.dataset import Dataset
from pydicom.uid import UID

#: galacto's UID root (also the default ``site.uid_root``); ``.0`` is kept for the software.
GALACTO_UID_ROOT = "1.2.826.0.1.3680043.10.1466"
#: The Implementation Class UID of galacto (every release; the version name tells them apart).
IMPLEMENTATION_CLASS_UID = f"{GALACTO_UID_ROOT}.0.1"


def _version() -> str:
    try:
        return metadata.version("galacto")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "0"


#: Implementation Version Name (SH, at most 16 characters): ``GALACTO_<version>``.
IMPLEMENTATION_VERSION_NAME = f"GALACTO_{_version()}"[:16]


def stamp_file_meta(ds: Dataset) -> None:
    """Name galacto as the implementation that wrote the file (PS3.10 Table 7.1-1)."""
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
