"""The simulated injector an exam-level test talks to, and whose clock it owns.

By default the pump is in process (``injsim://``) on a clock that moves only with the
conversation: each chunk the driver writes advances it :data:`STEP_PER_REQUEST_S` simulated
seconds (ophyd's way: the test decides what time is, nothing races the wall clock). A test that
needs the real wire (a pty that vanishes and comes back, a watchdog that runs while no host can
talk) is marked ``slow`` and gets the pty with scaled real time instead.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators import injsim
from simulators.injector import InjectorSimulator

#: Simulated seconds per request: a poll of a running injection (status, DIS, XPR, XEV) moves
#: the pump about 8 s, 0.04 mL at 0.3 mL/min.
STEP_PER_REQUEST_S = 2.0
#: Scaled real time of the real-wire tests: 0.1 mL at 0.3 mL/min (20 s) takes ~0.2 s.
TIME_SCALE = 120.0

_names = itertools.count()


def real_wire(request: pytest.FixtureRequest) -> bool:
    """Whether the test asked for the real wire (it is marked ``slow``)."""
    return request.node.get_closest_marker("slow") is not None


def conversation_clock(seed: int = 0) -> tuple[InjectorSimulator, str]:
    """A simulator on the conversation's clock and a fresh ``injsim://`` name for it."""
    sim = InjectorSimulator(seed=seed, manual_clock=True, step_per_request_s=STEP_PER_REQUEST_S)
    return sim, f"exam-{next(_names)}"


@contextlib.contextmanager
def simulated_injector(
    tmp_path: Path,
    *,
    real_wire: bool = False,
    seed: int = 0,
    time_scale: float | None = None,
) -> Iterator[tuple[InjectorSimulator, str]]:
    """The simulator and the URL the driver opens: ``injsim://`` on the conversation's clock,
    or (``real_wire``) a pty behind a stable symlink (a pty that vanishes comes back under the
    same name) with scaled real time."""
    if real_wire:
        with InjectorSimulator(seed=seed, time_scale=time_scale or TIME_SCALE) as sim:
            yield sim, sim.serve_pty(link=str(tmp_path / "injector"))
        return
    injsim.register()
    sim, name = conversation_clock(seed)
    with sim:
        url = injsim.add(name, sim)
        try:
            yield sim, url
        finally:
            injsim.remove(name)
