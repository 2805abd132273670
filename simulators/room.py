"""The simulated room: injector, RIS, PACS and mammography unit around one controller.

What ``galacto demo`` and the end-to-end tests stand the controller in. :class:`SimulatedRoom`
starts the injector simulator on a real pseudo-terminal and the RIS and PACS simulators on
loopback (port 0), schedules galactography orders at the RIS, and builds the simulated unit
once the controller's unit-facing address is known. :class:`UnitAutopilot` plays the
technologist at the unit in the interactive demo: whenever the controller offers a new phase
step on its worklist, the unit performs it (the step's planned views).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_nodes.datasets.contrast import ContrastAdministration
from dicom_nodes.network import Timeouts
from simulators import injsim
from simulators.injector import InjectorSimulator
from simulators.injector_faults import InjectorSimError
from simulators.pacs import SimulatedPacs
from simulators.ris import SimulatedRis
from simulators.ris_orders import DemoOrder
from simulators.unit import PerformedStep, SimulatedUnit, UnitError, WorklistStep
from simulators.unit_physics import View

log = logging.getLogger(__name__)

UNIT_AE = "MG_SIM"
#: The HVL table of the simulated unit (its profile reports no HVL): the controller's Dance
#: check of every exposure the unit makes takes its HVL from it (docs/dose.md).
UNIT_HVL_TABLE = Path(__file__).resolve().parent.parent / "config" / "units" / "sim-mg-w-rh.toml"
RIS_AE = "RIS_SIM"
PACS_AE = "PACS_SIM"
#: The station the RIS schedules galactography for: the controller (dicom.md §1).
CONTROLLER_STATION_AE = "GALACTO"


@dataclass(frozen=True)
class PeerAddress:
    host: str
    port: int
    ae_title: str


@dataclass(frozen=True)
class RoomEndpoints:
    injector_url: str
    ris: PeerAddress
    pacs: PeerAddress
    unit_ae_title: str


class SimulatedRoom:
    """The equipment around the controller; ``start()`` … ``stop()`` (or a ``with`` block)."""

    def __init__(
        self,
        *,
        time_scale: float = 20.0,
        seed: int = 0,
        injector: InjectorSimulator | None = None,
        in_process: str | None = None,
    ) -> None:
        """``injector``: the simulator to use (default: one on ``time_scale``); ``in_process``:
        put it at ``injsim://NAME`` (registering the handler) instead of on a pty."""
        self.seed = seed
        self.injector = injector or InjectorSimulator(seed=seed, time_scale=time_scale)
        self._in_process = in_process
        self.ris = SimulatedRis(RIS_AE, seed=seed, station_ae=CONTROLLER_STATION_AE)
        self.pacs = SimulatedPacs(PACS_AE)
        self._endpoints: RoomEndpoints | None = None
        self._units: list[SimulatedUnit] = []

    def start(self) -> RoomEndpoints:
        try:
            if self._in_process is not None:
                injsim.register()
                url = injsim.add(self._in_process, self.injector)
            else:
                url = self.injector.serve_pty()
            ris_host, ris_port = self.ris.start()
            pacs_host, pacs_port = self.pacs.start()
        except BaseException:
            self.stop()
            raise
        self._endpoints = RoomEndpoints(
            injector_url=url,
            ris=PeerAddress(ris_host, ris_port, RIS_AE),
            pacs=PeerAddress(pacs_host, pacs_port, PACS_AE),
            unit_ae_title=UNIT_AE,
        )
        return self._endpoints

    def stop(self) -> None:
        self.pacs.stop()
        self.ris.stop()
        if self._in_process is not None:
            injsim.remove(self._in_process)
        self.injector.close()

    def __enter__(self) -> SimulatedRoom:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoints(self) -> RoomEndpoints:
        if self._endpoints is None:
            raise RuntimeError("the room is not started")
        return self._endpoints

    def controller_settings(self, data_dir: Path | None = None) -> dict[str, Any]:
        """The settings that point a controller at this room; with ``data_dir``, also its
        files there, free ports for its listeners and retries and refreshes at loopback pace."""
        e = self.endpoints
        files: dict[str, Any] = {}
        if data_dir is not None:
            files = {
                "database.path": str(data_dir / "galacto.db"),
                "dicom.storage_dir": str(data_dir / "objects"),
                "dicom.port": 0,
                "console.port": 0,
                "pacs.retry_initial_s": 0.1,
                "pacs.retry_max_s": 1.0,
                "ris.refresh_interval_s": 2.0,
            }
        return {
            **files,
            "injector.url": e.injector_url,
            "ris.host": e.ris.host,
            "ris.port": e.ris.port,
            "ris.ae_title": e.ris.ae_title,
            "ris.station_ae_title": CONTROLLER_STATION_AE,
            "pacs.host": e.pacs.host,
            "pacs.port": e.pacs.port,
            "pacs.ae_title": e.pacs.ae_title,
            "dicom.unit_ae_title": e.unit_ae_title,
            "dose.hvl_tables": [str(UNIT_HVL_TABLE)],
        }

    def schedule_order(self, side: str = "L") -> DemoOrder:
        """Schedule one more galactography order at the RIS, for the ``side`` breast."""
        order = self.ris.add_orders(1)[0]
        if order.side != side:
            self.ris.withdraw_order(order.accession_number)
            order = dataclasses.replace(order, side=side)
            self.ris.add_order(order)
        return order

    def unit(self, host: str, port: int, controller_ae: str, **kwargs: Any) -> SimulatedUnit:
        """The simulated unit, talking to the controller at ``host:port``."""
        kwargs.setdefault("seed", self.seed)
        kwargs.setdefault("timeouts", Timeouts(connection_s=3, acse_s=5, dimse_s=15, network_s=30))
        unit = SimulatedUnit(host, port, controller_ae, ae_title=UNIT_AE, **kwargs)
        self._units.append(unit)
        return unit


def offered_step(unit: SimulatedUnit, sps_id: str) -> WorklistStep | None:
    """The step ``sps_id`` if the controller's worklist offers it to the unit now."""
    for step in unit.poll_worklist():
        if step.sps_id == sps_id:
            return step
    return None


def perform(
    unit: SimulatedUnit,
    step: WorklistStep,
    views: Sequence[str],
    contrast: ContrastAdministration | None = None,
) -> PerformedStep:
    """The unit performs one phase step with the given views (``"L-CC"``, ``"L-ML-MAG"``)."""
    return unit.perform_step(step, [View.parse(v) for v in views], contrast=contrast)


class UnitAutopilot:
    """Performs every new step the controller offers, with its planned views (interactive
    demo). Polls the worklist every ``interval_s``; a failed query is tried again at the next
    poll, a step that fails is not repeated (a unit never exposes again by itself). With
    ``injector``, a new syringe is loaded when an exam's pre-contrast step appears, as the
    technologist prepares one for each patient."""

    def __init__(
        self,
        unit: SimulatedUnit,
        *,
        injector: InjectorSimulator | None = None,
        interval_s: float = 1.0,
        on_performed: Callable[[PerformedStep], None] | None = None,
    ) -> None:
        self.unit = unit
        self.injector = injector
        self.interval_s = interval_s
        self.on_performed = on_performed
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unit-autopilot", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                steps = self.unit.poll_worklist()
            except UnitError as exc:
                log.warning("unit autopilot: worklist query failed: %s", exc)
                continue
            for step in steps:
                if step.sps_id in self._done:
                    continue
                self._done.add(step.sps_id)
                if self.injector is not None and step.sps_id.endswith("-PRE"):
                    try:
                        self.injector.load_new_syringe()
                    except InjectorSimError as exc:
                        log.warning("unit autopilot: syringe not changed: %s", exc)
                try:
                    performed = self.unit.perform_step(step)
                except UnitError as exc:
                    log.warning("unit autopilot: step not performed: %s", exc)
                    continue
                if self.on_performed is not None:
                    self.on_performed(performed)
