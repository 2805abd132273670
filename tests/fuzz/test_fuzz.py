"""Fuzzing the edges with hypothesis: the serial decoder, the SCP handlers, the console API.

Each fuzzer counts the cases it tried and the ones that crashed something (an exception out of
the decoder, a handler failure answered by pynetdicom itself — C2xxH — or a lost association,
an HTTP 500). The counts are printed (``-s``) and recorded in docs/reliability.md. The number of
cases per fuzzer is ``GALACTO_FUZZ_CASES`` (default: small enough for `make test`); the figures
in the docs come from longer runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pydicom.config
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from acquisition.console.backend import COMMANDS
from acquisition.dose_log import DoseLog
from acquisition.exam.model import CHECKLIST
from device_drivers.codec import Decoder, ProtocolError, Role, encode_safe, parse_reply
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import WorklistStore
from tests.console_room import console_room, request
from tests.dose_factories import (
    MG_FOR_PRESENTATION,
    MPPS_SOP_CLASS,
    Exposure,
    mg_image,
    mpps_create,
    scu_ae,
)

CASES = int(os.environ.get("GALACTO_FUZZ_CASES", "150"))
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
MWL_FIND = "1.2.840.10008.5.1.4.31"
pytestmark = pytest.mark.timeout(300)


@dataclass
class Tally:
    name: str
    cases: int = 0
    crashes: list[str] = field(default_factory=list)

    def report(self) -> None:
        print(f"\nfuzz {self.name}: {self.cases} cases, {len(self.crashes)} crashes")
        assert not self.crashes, self.crashes[:5]


# -- the serial decoder ------------------------------------------------------------------------

REPLY = encode_safe(b"00S")  # a valid Safe-mode reply frame


def test_fuzz_the_serial_decoder() -> None:
    tally = Tally("serial decoder")

    @given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
    @FUZZ
    def case(chunks: list[bytes], safe: bool) -> None:
        tally.cases += 1
        decoder = Decoder(Role.HOST, safe=safe)
        try:
            for chunk in chunks:
                for frame in decoder.feed(chunk):
                    with contextlib.suppress(ProtocolError):  # refused as the protocol says
                        parse_reply(frame.data)
            decoder.expire()
            frames = decoder.feed(REPLY)  # after garbage, the next good frame comes through
            assert [f.data for f in frames][-1:] == [b"00S"], "no resynchronisation"
        except Exception as exc:
            tally.crashes.append(f"{type(exc).__name__}: {exc} after {chunks!r}")

    case()
    tally.report()


# -- the SCP handlers, over real associations --------------------------------------------------

#: Statuses our handlers answer; anything else (pynetdicom's C2xxH for a handler exception, no
#: response at all) is a crash.
STORE_ANSWERS = {0x0000, 0xB007, 0xA700, 0xA900, 0xC000, 0xC010, 0xC011, 0xC012}
MPPS_ANSWERS = {0x0000, 0x0105, 0x0106, 0x0110, 0x0111, 0x0112, 0x0120, 0x0121}
FIND_ANSWERS = {0x0000, 0xFE00, 0xA700, 0xA900, 0xC000, 0xC001}

TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789.-", max_size=30),
    st.just(""),
    st.just("x" * 70_000),
)
KEYWORDS = [
    "PatientName",
    "PatientID",
    "StudyDescription",
    "KVP",
    "ExposureInuAs",
    "OrganDose",
    "ImageLaterality",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "SeriesInstanceUID",
    "AccessionNumber",
    "BodyPartThickness",
]


@st.composite
def mutated_image(draw: st.DrawFn) -> Dataset:
    ds = mg_image(Exposure(), study_uid="1.2.826.0.1.3680043.8.498.3", rows=4, columns=4)
    for keyword in draw(st.lists(st.sampled_from(KEYWORDS), max_size=4)):
        value = draw(st.one_of(TEXT, st.integers(-(2**31), 2**31 - 1)))
        try:
            setattr(ds, keyword, value)
        except Exception:
            continue
    size = draw(st.sampled_from([None, 0, 1, 31, 32, 33, 1000]))
    if size is not None:
        ds.PixelData = bytes(size)
    elif draw(st.booleans()):
        del ds.PixelData
    return ds


@st.composite
def mutated_mpps(draw: st.DrawFn) -> Dataset:
    ds = mpps_create(study_uid=str(generate_uid()))
    for keyword in draw(
        st.lists(
            st.sampled_from(
                [
                    "PerformedProcedureStepStatus",
                    "PerformedProcedureStepDescription",
                    "PerformedStationAETitle",
                    "PatientName",
                    "Modality",
                    "PerformedProcedureStepStartDate",
                ]
            ),
            max_size=3,
        )
    ):
        try:
            setattr(ds, keyword, draw(TEXT))
        except Exception:
            continue
    if draw(st.booleans()):
        item = Dataset()
        with contextlib.suppress(Exception):  # a value pydicom refuses to hold: no case
            item.KVP = draw(TEXT)
        ds.ExposureDoseSequence = [item]
    return ds


@st.composite
def mwl_query(draw: st.DrawFn) -> Dataset:
    q = Dataset()
    q.PatientName = draw(st.one_of(st.just(""), st.text(max_size=20)))
    q.PatientID = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = draw(st.one_of(st.just(""), st.text(max_size=20)))
    sps.ScheduledProcedureStepStartDate = draw(
        st.one_of(st.just(""), st.text(alphabet="0123456789-*?", max_size=20))
    )
    sps.ScheduledProcedureStepStartTime = draw(
        st.one_of(st.just(""), st.text(alphabet="0123456789-.:", max_size=16))
    )
    sps.Modality = draw(st.sampled_from(["", "MG", "*", "M?"]))
    q.ScheduledProcedureStepSequence = [sps] * draw(st.integers(0, 2))
    return q


class Associations:
    """One server, one association per service, re-opened when one is lost (counted)."""

    def __init__(self, server: UnitFacingServer) -> None:
        self.server = server
        contexts = (MG_FOR_PRESENTATION, MPPS_SOP_CLASS, MWL_FIND, "1.2.840.10008.1.1")
        self.ae: Any = scu_ae(*contexts, ae_title="MG_SIM")
        self.assoc: Any = None

    def get(self) -> Any:
        if self.assoc is None or not self.assoc.is_established:
            host, port = self.server.address
            self.assoc = self.ae.associate(host, port, ae_title="GALACTO")
            assert self.assoc.is_established
        return self.assoc

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.ae.shutdown()


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[Associations]:
    tmp = tmp_path
    db = tmp / "galacto.db"
    worklist, mpps, dose_log = WorklistStore(db), SqliteMppsStore(db), DoseLog(db)
    server = UnitFacingServer(worklist, mpps, dose_log, port=0, storage_dir=tmp / "objects")
    server.start()
    associations = Associations(server)
    old = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE  # send bad values
    try:
        yield associations
    finally:
        pydicom.config.settings.writing_validation_mode = old
        associations.close()
        server.stop()
        dose_log.close()
        mpps.close()


def _status(assoc: Any, response: Any, answers: set[int], tally: Tally, what: str) -> None:
    tally.cases += 1
    if not assoc.is_established or response is None or "Status" not in response:
        tally.crashes.append(f"{what}: no response (association lost)")
        return
    if int(response.Status) not in answers:
        tally.crashes.append(f"{what}: status 0x{int(response.Status):04X}")


def test_fuzz_the_scp_handlers(scp: Associations, tmp_path: Path) -> None:
    tally = Tally("SCP handlers (C-STORE, N-CREATE, N-SET, C-FIND)")

    @given(mutated_image())
    @FUZZ
    def store(ds: Dataset) -> None:
        assoc = scp.get()
        try:
            response = assoc.send_c_store(ds)
        except Exception as exc:  # pydicom could not even encode it: not a case
            if assoc.is_established:
                return
            raise AssertionError(f"C-STORE lost the association: {exc}") from exc
        _status(assoc, response, STORE_ANSWERS, tally, "C-STORE")

    @given(mutated_mpps(), TEXT)
    @FUZZ
    def mpps(ds: Dataset, description: str) -> None:
        assoc = scp.get()
        uid = str(generate_uid())
        try:
            created, _ = assoc.send_n_create(ds, MPPS_SOP_CLASS, uid)
        except Exception:
            if assoc.is_established:
                return
            raise
        _status(assoc, created, MPPS_ANSWERS, tally, "N-CREATE")
        change = Dataset()
        change.PerformedProcedureStepDescription = description
        response, _ = assoc.send_n_set(change, MPPS_SOP_CLASS, uid)
        _status(assoc, response, MPPS_ANSWERS, tally, "N-SET")

    @given(mwl_query())
    @FUZZ
    def find(query: Dataset) -> None:
        assoc = scp.get()
        final = None
        try:
            for status, _ in assoc.send_c_find(query, MWL_FIND):
                final = status
        except ValueError:  # pydicom could not even encode it: not a case
            if assoc.is_established:
                return
            raise
        if final is not None and "Status" in final and int(final.Status) in (0xFF00, 0xFF01):
            final = None  # a pending response last: the association ended early
        _status(assoc, final, FIND_ANSWERS, tally, "C-FIND")

    store()
    mpps()
    find()
    assert scp.get().send_c_echo().Status == 0  # still serving
    tmp_dir = Path(scp.server.storage_scp.objects.db_path).parent / "tmp"
    assert not list(tmp_dir.iterdir()), "a refused dataset was left behind"
    tally.report()


# -- the console API --------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ARG_NAMES = ["accession", "side", "volume_ml", "rate_ml_min", "answers", "override", "reason_code"]
ARG_NAMES += ["patient_name", "patient_id", "birth_date", "sex", *CHECKLIST]


@st.composite
def console_request(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    name = draw(st.one_of(st.sampled_from(COMMANDS), st.text(max_size=12)))
    args = draw(st.dictionaries(st.sampled_from(ARG_NAMES), JSON, max_size=4))
    body: Any = {"args": args}
    if draw(st.booleans()):  # a free-text operator is no longer part of the API: refused
        body["operator"] = draw(st.one_of(st.text(max_size=70), JSON))
    raw = draw(
        st.one_of(
            st.just(json.dumps(body, allow_nan=True).encode()),
            st.binary(max_size=200),
            st.just(b"{"),
        )
    )
    content_type = draw(st.sampled_from(["application/json", "text/plain", ""]))
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]))
    session = draw(st.sampled_from(["technologist", "technologist", "no csrf", "none"]))
    return (
        method,
        "/api/command/" + quote(name),
        raw,
        {"Content-Type": content_type, "X-Session": session},
    )


def test_fuzz_the_console_api(tmp_path: Path) -> None:
    tally = Tally("console API")
    with console_room(tmp_path) as room:

        @given(console_request())
        @FUZZ
        def case(req: tuple[str, str, bytes, dict[str, str]]) -> None:
            method, path, body, headers = req
            tally.cases += 1
            session = headers.pop("X-Session")
            assert room.tech is not None
            if session != "none":
                headers.update(room.tech.headers(csrf=session == "technologist"))
            try:
                status, _, raw = request(room.url, method, path, body=body, headers=headers)
            except Exception as exc:
                tally.crashes.append(f"{method} {path}: {type(exc).__name__}: {exc}")
                return
            if status >= 500 or status not in (200, 400, 401, 403, 404, 405, 409, 413, 415, 501):
                tally.crashes.append(f"{method} {path}: HTTP {status} {raw[:200]!r}")

        case()
        assert room.tech is not None
        status, _, raw = request(room.url, headers=room.tech.headers())
        assert status == 200 and json.loads(raw)["exam"]["state"]
    tally.report()
