"""``injsim://NAME``: the driver against the simulated pump in the same process, no pty.

As python-can's virtual bus and pyserial's own ``loop://`` do, a pyserial URL handler
(:mod:`simulators.protocol_injsim`, found through ``serial.protocol_handler_packages``) opens an
in-process line to an :class:`~simulators.injector.InjectorSimulator`. The driver is the real
driver and its link the real link: only the transport differs. What the host writes is handed to
the simulator's wire at once, and what the simulator sends is read back when it is due; there is
no I/O thread: the host's reads give the simulator its turns (timers, the real-time watchdog).

Only the tests and ``galacto demo`` call :func:`register` (``galacto sim`` serves a pty or a
socket): a controller never finds ``injsim://`` unless one of them put it there.

URL: ``injsim://NAME[?option=value&…]``. ``NAME`` is a simulator :func:`add`-ed under that name
(a test that holds it and owns its clock), or else one made from the options and kept under that
name for the life of the process (a device left powered: reopening the URL finds the same pump):

* ``clock=manual``: simulated time moves only by :meth:`~InjectorSimulator.advance` (default:
  real time × ``time_scale``); ``step_s=S``: and ``S`` simulated seconds per chunk the host
  writes (the pump's time follows the conversation, never the wall clock);
* ``time_scale=X``, ``seed=N``, ``syringe=1ml|3ml``, ``plain=1``, ``fault=SPEC`` (repeatable).
"""

from __future__ import annotations

import threading
import urllib.parse

import serial

from simulators.injector import InjectorSimulator
from simulators.injector_faults import InjectorSimError
from simulators.injector_physics import SimParams

SCHEME = "injsim"
#: The package in which pyserial finds ``protocol_injsim``.
HANDLER_PACKAGE = "simulators"
_simulators: dict[str, InjectorSimulator] = {}
_registry_lock = threading.Lock()


def register() -> None:
    """Let ``serial.serial_for_url`` open ``injsim://`` URLs (idempotent)."""
    if HANDLER_PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(HANDLER_PACKAGE)


def add(name: str, simulator: InjectorSimulator) -> str:
    """Make ``simulator`` the one ``injsim://NAME`` opens; return that URL."""
    with _registry_lock:
        if name in _simulators:
            raise InjectorSimError(f"{SCHEME}://{name} is taken")
        _simulators[name] = simulator
    return f"{SCHEME}://{name}"


def remove(name: str) -> None:
    with _registry_lock:
        _simulators.pop(name, None)


def simulator(url: str) -> InjectorSimulator:
    """The simulator ``url`` names, made from the URL's options when none was added."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != SCHEME or not parts.netloc:
        raise ValueError(f"expected {SCHEME}://NAME[?options], got {url!r}")
    with _registry_lock:
        found = _simulators.get(parts.netloc)
        if found is None:
            found = _simulators[parts.netloc] = _from_options(parts.query)
        return found


def _from_options(query: str) -> InjectorSimulator:
    options = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False)
    known = {"clock", "step_s", "time_scale", "seed", "syringe", "plain", "fault"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {SCHEME}:// option(s): {', '.join(unknown)}")

    def one(name: str, default: str) -> str:
        return options.get(name, [default])[-1]

    clock = one("clock", "real")
    if clock not in ("real", "manual"):
        raise ValueError(f"clock must be real or manual, not {clock!r}")
    return InjectorSimulator(
        SimParams(syringe=one("syringe", "1ml")),
        seed=int(one("seed", "0")),
        time_scale=float(one("time_scale", "1")),
        plain=one("plain", "0") in ("1", "true", "yes"),
        faults=options.get("fault", []),
        manual_clock=clock == "manual",
        step_per_request_s=float(one("step_s", "0")),
    )
