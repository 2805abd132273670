"""The guard that keeps DIMSE responses away from pynetdicom's reactor (dicom_nodes.compat)."""

from __future__ import annotations

import queue

import pytest
from pynetdicom.dimse_primitives import N_EVENT_REPORT, N_SET

from dicom_nodes.compat import _ResponsesForTheCaller


def response() -> N_SET:
    rsp = N_SET()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.Status = 0x0000
    return rsp


def request() -> N_EVENT_REPORT:
    req = N_EVENT_REPORT()
    req.MessageID = 7
    req.AffectedSOPClassUID = "1.2.840.10008.1.20.1"
    req.AffectedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    req.EventTypeID = 1
    return req


def test_the_reactor_poll_never_takes_a_response() -> None:
    q = _ResponsesForTheCaller()
    rsp = response()
    q.put((1, rsp))
    with pytest.raises(queue.Empty):
        q.get(block=False)
    assert q.get(block=True, timeout=1) == (1, rsp)


def test_the_reactor_poll_takes_a_request_at_the_head() -> None:
    q = _ResponsesForTheCaller()
    req = request()
    q.put((3, req))
    assert q.get(block=False) == (3, req)


def test_order_is_kept_a_request_behind_a_response_waits() -> None:
    q = _ResponsesForTheCaller()
    rsp, req = response(), request()
    q.put((1, rsp))
    q.put((3, req))
    with pytest.raises(queue.Empty):
        q.get(block=False)
    assert q.get(timeout=1) == (1, rsp)
    assert q.get(block=False) == (3, req)


def test_the_abort_sentinel_is_left_for_the_caller() -> None:
    q = _ResponsesForTheCaller()
    q.put((None, None))
    with pytest.raises(queue.Empty):
        q.get(block=False)
    assert q.get(timeout=1) == (None, None)
