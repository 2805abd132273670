"""The injector's safety limits (procedure.md, injector-protocol.md §9) and the syringes it takes.

:class:`InjectorLimits` holds what settings may choose, each checked against the hard limits
below when it is made: settings may lower a hard maximum, never raise it, and raise a hard
floor, never lower it.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_drivers.errors import LimitError

#: Inner diameter of the syringes the injector may carry (injector-protocol.md §9).
SYRINGE_DIAMETERS_MM: dict[str, float] = {"1ml": 4.699, "3ml": 8.585}
#: The pump's volume display resolution: differences below it are not corrections.
VOLUME_RESOLUTION_ML = 0.001

#: Hard limits (procedure.md, injector-protocol.md §9): settings may lower them, never raise.
HARD_MAX_RATE_ML_MIN = 1.0
HARD_MAX_VOLUME_PER_INJECTION_ML = 3.0
HARD_MAX_VOLUME_PER_SESSION_ML = 5.0
HARD_PRESSURE_CEILING_KPA = 350.0
HARD_MAX_INJECTION_S = 3600.0
#: Hard floors: settings may raise them, never lower. A wire number carries 3 decimals (of mL,
#: of mL/min): at 0.05 its rounding is at most 1 % (the most a wire value may be off), and the
#: over-delivery tolerance (0.02 mL) is already 40 % of the smallest injection.
HARD_MIN_VOLUME_ML = 0.05
HARD_MIN_RATE_ML_MIN = 0.05


@dataclass(frozen=True)
class InjectorLimits:
    """Safety limits and timings of the driver (``InjectorSettings`` maps onto it)."""

    max_rate_ml_min: float = HARD_MAX_RATE_ML_MIN
    min_rate_ml_min: float = HARD_MIN_RATE_ML_MIN
    min_volume_ml: float = HARD_MIN_VOLUME_ML
    #: The longest injection (volume / rate), inclusive: 0.5 mL at the slowest rate.
    max_injection_s: float = 600.0
    max_volume_per_injection_ml: float = HARD_MAX_VOLUME_PER_INJECTION_ML
    #: The driver tracks the total it delivered since connect() (the exam owns per-exam limits).
    max_volume_per_session_ml: float = HARD_MAX_VOLUME_PER_SESSION_ML
    pressure_warning_kpa: float = 70.0  # above the baseline
    pressure_adjustment_kpa: float = 100.0  # above the baseline: the device reduces its rate
    pressure_termination_kpa: float = 170.0  # above the baseline: stop
    pressure_ceiling_kpa: float = HARD_PRESSURE_CEILING_KPA  # absolute
    baseline_window_s: float = 2.0
    arm_timeout_s: float = 120.0
    max_hold_s: float = 120.0
    #: Safe-mode watchdog programmed with ``SAF n``.
    safe_timeout_s: int = 2
    #: Poll period while armed, injecting or held; capped at safe_timeout_s / 2.
    poll_interval_s: float = 0.2
    #: A pressure fall this far below the peak of the run while infusing at the set rate
    #: suggests extravasation (the duct's resistance drops): the injection is stopped.
    extravasation_drop_kpa: float = 5.0
    #: Delivered volume may fall short of the target by this much and still be "completed".
    volume_tolerance_ml: float = 0.005

    def __post_init__(self) -> None:
        hard = (
            ("max_rate_ml_min", self.max_rate_ml_min, HARD_MAX_RATE_ML_MIN),
            (
                "max_volume_per_injection_ml",
                self.max_volume_per_injection_ml,
                HARD_MAX_VOLUME_PER_INJECTION_ML,
            ),
            (
                "max_volume_per_session_ml",
                self.max_volume_per_session_ml,
                HARD_MAX_VOLUME_PER_SESSION_ML,
            ),
            ("pressure_ceiling_kpa", self.pressure_ceiling_kpa, HARD_PRESSURE_CEILING_KPA),
            ("max_injection_s", self.max_injection_s, HARD_MAX_INJECTION_S),
        )
        for name, value, ceiling in hard:
            if not 0 < value <= ceiling:
                raise LimitError(f"{name} must be in (0, {ceiling}], got {value}")
        floors = (
            (
                "min_volume_ml",
                self.min_volume_ml,
                HARD_MIN_VOLUME_ML,
                self.max_volume_per_injection_ml,
            ),
            ("min_rate_ml_min", self.min_rate_ml_min, HARD_MIN_RATE_ML_MIN, self.max_rate_ml_min),
        )
        for name, value, floor, maximum in floors:
            if not floor <= value <= maximum:
                raise LimitError(f"{name} must be in [{floor}, {maximum}], got {value}")
        if not (
            0
            < self.pressure_warning_kpa
            < self.pressure_adjustment_kpa
            < self.pressure_termination_kpa
        ):
            raise LimitError("pressure limits must satisfy 0 < warning < adjustment < termination")
        if not 1 <= self.safe_timeout_s <= 255:
            raise LimitError(f"safe_timeout_s must be 1..255, got {self.safe_timeout_s}")

    @property
    def heartbeat_s(self) -> float:
        """Rule 1: at least every SAF/2 seconds."""
        return min(self.poll_interval_s, self.safe_timeout_s / 2)
