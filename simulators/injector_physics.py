"""The physical model behind the simulated injector (domain/injector-protocol.md §9). Pure, no I/O.

Plunger travel = volume / syringe cross-section; the NE-1000 plunger speed limit gives 0.885 mL/min
on a 1 mL syringe (4.699 mm bore). Line pressure is the Hagen–Poiseuille drop through the 30 G
cannula (laminar, linear in flow: ≈ 80 kPa at 0.5 mL/min with iohexol 300 at 20 °C) plus the duct
back-pressure, modelled as a compliance that stiffens exponentially as the duct fills and drains
slowly back around the cannula. Not clinical advice: defaults are order-of-magnitude figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SyringeSpec:
    """A syringe the simulated pump can hold."""

    name: str
    inner_diameter_mm: float
    capacity_ml: float


#: BD plastic syringes (New Era syringe table).
SYRINGES: dict[str, SyringeSpec] = {
    "1ml": SyringeSpec("1ml", 4.699, 1.0),
    "3ml": SyringeSpec("3ml", 8.585, 3.0),
}


def syringe_area_mm2(inner_diameter_mm: float) -> float:
    """Plunger cross-section."""
    return math.pi * (inner_diameter_mm / 2.0) ** 2


def plunger_travel_mm(volume_ml: float, inner_diameter_mm: float) -> float:
    """Plunger travel that dispenses ``volume_ml`` (1 mL = 1000 mm³)."""
    return volume_ml * 1000.0 / syringe_area_mm2(inner_diameter_mm)


#: NE-1000 maximum plunger speed, from its 0.885 mL/min maximum rate on a 1 mL BD syringe.
NE1000_MAX_SPEED_MM_MIN = 0.885 * 1000.0 / syringe_area_mm2(4.699)


@dataclass(frozen=True)
class SimParams:
    """Every number of the simulated injector; defaults follow injector-protocol.md §9.

    Times marked *simulated* run on the simulator clock (real time × ``time_scale`` + ``advance``);
    times marked *real* run on ``time.monotonic()``.
    """

    syringe: str = "1ml"
    address: int = 0
    model: int = 1000
    firmware: str = "3.928"
    max_plunger_speed_mm_min: float = NE1000_MAX_SPEED_MM_MIN
    # Default program (what a freshly powered pump holds).
    rate_ml_min: float = 0.3
    volume_ml: float = 0.5
    # Hagen–Poiseuille through the cannula.
    contrast_viscosity_pa_s: float = 11.8e-3  # iohexol 300 at 20 °C
    cannula_bore_mm: float = 0.159  # 30 G
    cannula_length_mm: float = 12.7
    # Duct compliance: p = stiffness × (exp(V / capacity) − 1), draining with a time constant.
    duct_stiffness_kpa: float = 30.0
    duct_capacity_ml: float = 1.0
    duct_drain_tau_s: float = 120.0  # simulated
    pressure_noise_kpa: float = 0.0  # σ of seeded Gaussian sensor noise
    line_tau_s: float = 0.3  # simulated: syringe and tubing compliance, first-order lag
    # Pressure limits, relative to the baseline measured over the first seconds of a run.
    baseline_window_s: float = 2.0  # simulated
    pressure_warning_kpa: float = 70.0
    pressure_adjustment_kpa: float = 100.0
    pressure_termination_kpa: float = 170.0
    pressure_ceiling_kpa: float = 350.0  # absolute, always applies
    adaptive_decay_per_s: float = 0.5  # rate multiplier decay above the adjustment limit
    adaptive_floor: float = 0.2  # the rate never falls below this fraction of the set rate
    # Timeouts.
    arm_timeout_s: float = 120.0  # simulated
    max_hold_s: float = 120.0  # simulated
    shortened_timeout_s: float = 0.01  # arm_timeout / hold_timeout faults, simulated
    watchdog_when_idle: bool = True  # the Safe-mode watchdog also runs while stopped
    inter_byte_timeout_s: float = 0.5  # real
    # Fault shapes.
    ramp_kpa_per_s: float = 30.0  # pressure_ramp, simulated
    occlusion_ramp_kpa_per_s: float = 60.0  # simulated
    occlusion_detect_s: float = 1.0  # simulated: no flow for this long under pressure → A?C
    extravasation_factor: float = 0.1  # duct stiffness multiplier after extravasation
    extravasation_drain_tau_s: float = 5.0  # simulated
    under_delivery_factor: float = 0.85
    dis_under_report_factor: float = 0.5  # dis_under_report: the share of the travel DIS counts
    empty_fraction: float = 0.5  # syringe_empty: the syringe holds this share of what remains
    late_reply_s: float = 1.5  # real, beyond the host's 1 s reply deadline
    trickle_min_s: float = 0.1  # real
    trickle_max_s: float = 0.4  # real
    garbage_max_bytes: int = 8
    port_vanish_s: float = 1.0  # real: how long the port stays away for the port_vanish fault
    stx_etx_search_kpa: float = 2.0  # stx_etx_in_crc: pressure reading jitter allowed to find one
    step_s: float = 0.05  # simulated integration step

    def __post_init__(self) -> None:
        if self.syringe not in SYRINGES:
            raise ValueError(f"syringe must be one of {sorted(SYRINGES)}, got {self.syringe!r}")
        if not 0 <= self.address <= 99:
            raise ValueError(f"address must be 0..99, got {self.address}")
        if not (
            0
            < self.pressure_warning_kpa
            < self.pressure_adjustment_kpa
            < self.pressure_termination_kpa
        ):
            raise ValueError("pressure limits must satisfy 0 < warning < adjustment < termination")

    @property
    def syringe_spec(self) -> SyringeSpec:
        return SYRINGES[self.syringe]

    @property
    def cannula_kpa_per_ml_min(self) -> float:
        """Hagen–Poiseuille: Δp = 8 μ L Q / (π r⁴), per mL/min of flow, in kPa."""
        radius_m = self.cannula_bore_mm / 2000.0
        resistance_pa_s_m3 = (
            8.0 * self.contrast_viscosity_pa_s * (self.cannula_length_mm / 1000.0)
        ) / (math.pi * radius_m**4)
        one_ml_min_m3_s = 1e-6 / 60.0
        return resistance_pa_s_m3 * one_ml_min_m3_s / 1000.0

    def max_rate_ml_min(self, inner_diameter_mm: float) -> float:
        """Fastest rate the plunger can move on a syringe of this bore."""
        return self.max_plunger_speed_mm_min * syringe_area_mm2(inner_diameter_mm) / 1000.0


def cannula_pressure_kpa(params: SimParams, flow_ml_min: float) -> float:
    """Pressure drop across the cannula at ``flow_ml_min`` (laminar, linear)."""
    return params.cannula_kpa_per_ml_min * max(flow_ml_min, 0.0)


def duct_pressure_kpa(params: SimParams, duct_ml: float, stiffness_factor: float = 1.0) -> float:
    """Back-pressure of a duct holding ``duct_ml``: a compliance that stiffens as it fills."""
    filled = max(duct_ml, 0.0) / params.duct_capacity_ml
    return params.duct_stiffness_kpa * stiffness_factor * math.expm1(filled)


def drained_ml(duct_ml: float, dt_s: float, tau_s: float) -> float:
    """Volume left in the duct after ``dt_s`` of exponential drainage."""
    return duct_ml * math.exp(-dt_s / tau_s)
