"""The mechanics of the simulated pump: plunger, line and duct (domain/injector-protocol.md §9).

:class:`PumpMechanics` integrates one physics step of :class:`~simulators.injector_state.SimState`:
plunger travel, flow, infused volume, the syringe running out (stall ``A?S``), Hagen–Poiseuille
cannula pressure lagging the flow, duct compliance and drainage, the pressure baseline of a run,
warning and adjustment events, adaptive flow and termination, the arm and hold timeouts, and the
fault conditions that act through the physics (pressure ramp, occlusion, extravasation, the
pump's own safety layers switched off). It raises alarms and queues events through the pump's
callbacks. Pure: time is the ``dt`` it is given.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable

from device_drivers.codec import Alarm, Prompt
from device_drivers.events import InjectorEvent
from simulators.injector_physics import (
    SimParams,
    cannula_pressure_kpa,
    drained_ml,
    duct_pressure_kpa,
)
from simulators.injector_state import MOVING, Direction, SimState

log = logging.getLogger(__name__)


class PumpMechanics:
    """One pump's physics (see the module docstring). ``watch_pressure`` False: a plain pump,
    nothing watches the pressure (no baseline, limits or events)."""

    def __init__(
        self,
        params: SimParams,
        state: SimState,
        rng: random.Random,
        *,
        raise_alarm: Callable[[Alarm, Iterable[InjectorEvent]], None],
        queue_event: Callable[[InjectorEvent], None],
        watch_pressure: bool = True,
    ) -> None:
        self.params = params
        self._state = state
        self._rng = rng
        self._raise_alarm = raise_alarm
        self._queue_event = queue_event
        self._watch_pressure = watch_pressure
        self._baseline_samples: list[float] = []

    def start_run(self) -> None:
        """A new run: its baseline is measured afresh."""
        self._baseline_samples = []

    def self_hold(self) -> None:
        """The pump pauses the running injection by itself (a programmed pause: prompt ``P``)."""
        s = self._state
        if s.injecting and not s.held:
            s.held = True
            s.hold_started_s = s.sim_time_s
            self._queue_event(InjectorEvent.PROGRAMMED_HOLD)

    def empty_syringe(self) -> None:
        """The syringe holds only ``empty_fraction`` of what the run still needs."""
        s = self._state
        need_ml = s.target_ml - s.run_ml if s.prompt in MOVING else s.target_ml
        if need_ml <= 0:
            need_ml = s.syringe_remaining_ml
        s.syringe_remaining_ml = min(s.syringe_remaining_ml, need_ml * self.params.empty_fraction)

    def step(self, dt: float) -> None:
        """Integrate ``dt`` simulated seconds (one physics step)."""
        s = self._state
        p = self.params
        if (
            s.armed
            and "arm_timeout_off" not in s.layers_off
            and s.sim_time_s - s.armed_at_s >= s.arm_timeout_s
        ):
            s.armed = False
            log.info("injector simulator: arm timeout")
        if (
            s.held
            and "hold_timeout_off" not in s.layers_off
            and s.sim_time_s - s.hold_started_s >= s.max_hold_s
        ):
            log.info("injector simulator: hold timeout")
            s.stop_motor()
            self._queue_event(InjectorEvent.TERMINATED_HOLD_TIMEOUT)
        flow_ml_min = 0.0
        if s.moving:
            flow_ml_min = self._move(dt)
        tau = p.extravasation_drain_tau_s if s.extravasated else p.duct_drain_tau_s
        s.duct_ml = drained_ml(s.duct_ml, dt, tau)
        if s.ramp_active and s.prompt is Prompt.INFUSING and not s.held:
            s.ramp_kpa += p.ramp_kpa_per_s * dt
        infusing = s.prompt is Prompt.INFUSING and not s.held
        stiffness = p.extravasation_factor if s.extravasated else 1.0
        target_kpa = cannula_pressure_kpa(p, flow_ml_min)
        s.line_kpa += (target_kpa - s.line_kpa) * -math.expm1(-dt / p.line_tau_s)
        pressure = s.line_kpa + duct_pressure_kpa(p, s.duct_ml, stiffness)
        if infusing:
            pressure += s.ramp_kpa + s.occlusion_kpa
        if p.pressure_noise_kpa:
            pressure += self._rng.gauss(0.0, p.pressure_noise_kpa)
        s.pressure_kpa = max(pressure, 0.0)
        if infusing and self._watch_pressure and "pressure_limits_off" not in s.layers_off:
            self._check_pressure(dt)

    def _move(self, dt: float) -> float:
        """Advance the plunger; return the flow through the line in mL/min."""
        s = self._state
        p = self.params
        purging = s.prompt is Prompt.PURGING
        rate = p.max_rate_ml_min(s.diameter_mm) if purging else s.rate_ml_min * s.rate_multiplier
        if s.prompt is Prompt.WITHDRAWING:
            dv = rate / 60.0 * dt
            s.withdrawn_ml += dv
            s.syringe_remaining_ml += dv
            s.duct_ml = max(0.0, s.duct_ml - dv)
            s.run_ml += dv
            self._complete_if_done()
            return 0.0
        if s.occluded and not purging:
            s.occlusion_kpa += p.occlusion_ramp_kpa_per_s * dt
            s.occlusion_s += dt
            if s.occlusion_s >= p.occlusion_detect_s:
                self._raise_alarm(Alarm.OCCLUSION, ())
            return rate  # the sensor sits before the blockage: it keeps the working pressure
        # The pump measures its progress by its counter: under dis_under_report that counter
        # sees only part of the travel, and the pump runs on until it shows the target.
        measured = p.dis_under_report_factor if "dis_under_report" in s.layers_off else 1.0
        travel = rate / 60.0 * dt
        if not purging and s.target_ml > 0 and "ignore_volume" not in s.layers_off:
            travel = min(travel, (s.target_ml - s.run_ml) / measured)
        travel = max(travel, 0.0)
        dv = min(travel, s.syringe_remaining_ml)  # what really leaves the syringe
        if "end_stop_off" not in s.layers_off:
            travel = dv  # the plunger stops at the end of the syringe
        s.run_ml += travel * measured
        s.syringe_remaining_ml -= dv
        s.actual_infused_ml += dv
        s.infused_ml += travel * measured * (p.under_delivery_factor if s.under_delivery else 1.0)
        if not purging:
            s.duct_ml += dv
        flow_ml_min = dv / dt * 60.0 if dt > 0 else 0.0
        if not purging and self._complete_if_done():
            return flow_ml_min
        if s.syringe_remaining_ml <= 1e-12 and "end_stop_off" not in s.layers_off:
            log.info("injector simulator: plunger at the end of the syringe")
            self._raise_alarm(Alarm.STALLED, ())
        return flow_ml_min

    def _complete_if_done(self) -> bool:
        s = self._state
        ignored = "ignore_volume" in s.layers_off and s.direction is Direction.INFUSE
        if s.target_ml > 0 and not ignored and s.run_ml >= s.target_ml - 1e-9:
            s.stop_motor()
            if s.direction is Direction.INFUSE:
                self._queue_event(InjectorEvent.COMPLETE)
            log.info("injector simulator: run complete")
            return True
        return False

    def _check_pressure(self, dt: float) -> None:
        """Baseline, warning, adaptive flow and termination (§9 limits, relative to baseline)."""
        s = self._state
        p = self.params
        pressure = s.pressure_kpa
        if s.baseline_kpa is None:
            self._baseline_samples.append(pressure)
            if s.sim_time_s - s.run_started_s >= p.baseline_window_s:
                s.baseline_kpa = sum(self._baseline_samples) / len(self._baseline_samples)
        excess = pressure - s.baseline_kpa if s.baseline_kpa is not None else -math.inf
        if pressure >= p.pressure_ceiling_kpa or excess >= s.termination_kpa:
            log.info("injector simulator: pressure %.1f kPa: terminated", pressure)
            self._raise_alarm(Alarm.OVER_PRESSURE, (InjectorEvent.TERMINATED_PRESSURE,))
            return
        if excess >= s.warning_kpa and not s.warned:
            s.warned = True
            self._queue_event(InjectorEvent.PRESSURE_WARNING)
        if excess >= s.adjustment_kpa:
            if not s.adjusted:
                s.adjusted = True
                self._queue_event(InjectorEvent.PRESSURE_ADJUSTMENT)
            s.rate_multiplier = max(
                p.adaptive_floor, s.rate_multiplier * math.exp(-p.adaptive_decay_per_s * dt)
            )
