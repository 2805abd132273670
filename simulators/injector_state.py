"""What the simulated injector knows: its state, units and the numbers it answers.

:class:`SimState` is the whole state of the simulated pump, pump and wire alike (the counters
of bytes and the port's connection are filled in by :class:`~simulators.injector.
InjectorSimulator` in a snapshot). Pure data, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from device_drivers.codec import Alarm, Prompt, format_number

#: Rate units → mL/min per unit (NE ``RAT`` units).
RATE_UNITS: dict[str, float] = {"UM": 1e-3, "MM": 1.0, "UH": 1.0 / 60_000.0, "MH": 1.0 / 60.0}
#: Volume units → mL per unit (NE ``VOL`` units).
VOLUME_UNITS: dict[str, float] = {"UL": 1e-3, "ML": 1.0}
#: Prompts of a motor that moves.
MOVING = (Prompt.INFUSING, Prompt.WITHDRAWING, Prompt.PURGING)


class Direction(enum.Enum):
    INFUSE = "INF"
    WITHDRAW = "WDR"


@dataclass
class SimState:
    """Everything the simulated pump knows. :meth:`InjectorSimulator.snapshot` returns a copy."""

    prompt: Prompt = Prompt.STOPPED
    alarm: Alarm | None = Alarm.RESET
    safe_mode: bool = False
    safe_timeout_s: int = 0
    armed: bool = False
    held: bool = False
    direction: Direction = Direction.INFUSE
    diameter_mm: float = 4.699
    rate_value: float = 300.0
    rate_units: str = "UM"
    volume_value: float = 0.5
    volume_units: str = "ML"
    infused_ml: float = 0.0  # the counter DIS reports (a fault may make it lie)
    withdrawn_ml: float = 0.0
    #: What really left the syringe forward (infusions and purges), whatever the counter says.
    actual_infused_ml: float = 0.0
    run_ml: float = 0.0  # progress of the current run, as the pump measures it
    syringe_remaining_ml: float = 1.0
    duct_ml: float = 0.0
    line_kpa: float = 0.0  # cannula pressure, lagging the flow by the line compliance
    pressure_kpa: float = 0.0
    baseline_kpa: float | None = None
    rate_multiplier: float = 1.0  # adaptive flow
    warning_kpa: float = 70.0
    adjustment_kpa: float = 100.0
    termination_kpa: float = 170.0
    arm_timeout_s: float = 120.0
    max_hold_s: float = 120.0
    sim_time_s: float = 0.0
    power_up_s: float = 0.0
    armed_at_s: float = 0.0
    hold_started_s: float = 0.0
    run_started_s: float = 0.0
    commands_received: int = 0
    rx_bytes: int = 0  # bytes read from the host
    tx_bytes: int = 0  # bytes written to the host
    tx_queued_bytes: int = 0  # bytes waiting to be written (late or trickled replies)
    rx_pending_bytes: int = 0  # a partial packet waiting for more bytes (or the 0.5 s gap)
    run_count: int = 0
    connected: bool = False
    url: str = ""
    events: list[tuple[str, int]] = field(default_factory=list)  # queued for XEV
    events_raised: list[str] = field(default_factory=list)  # every code ever queued
    alarms_raised: list[str] = field(default_factory=list)  # every alarm letter ever raised
    faults_fired: list[str] = field(default_factory=list)
    # Fault conditions in force.
    ramp_active: bool = False
    ramp_kpa: float = 0.0
    occluded: bool = False
    occlusion_kpa: float = 0.0
    occlusion_s: float = 0.0
    extravasated: bool = False
    under_delivery: bool = False
    #: The pump's own safety layers switched off (the ``LAYER_OFF_FAULTS`` fired so far).
    layers_off: set[str] = field(default_factory=set)
    warned: bool = False
    adjusted: bool = False

    @property
    def rate_ml_min(self) -> float:
        return self.rate_value * RATE_UNITS[self.rate_units]

    @property
    def target_ml(self) -> float:
        return self.volume_value * VOLUME_UNITS[self.volume_units]

    @property
    def moving(self) -> bool:
        return self.prompt in MOVING and not self.held

    @property
    def injecting(self) -> bool:
        """Infusing or held in the middle of an injection."""
        return self.prompt is Prompt.INFUSING

    @property
    def status_prompt(self) -> Prompt:
        return Prompt.PAUSED if self.held else self.prompt

    def stop_motor(self) -> None:
        """Stop; the run-bound fault conditions (pressure ramp, occlusion) end with the run."""
        self.prompt = Prompt.STOPPED
        self.held = False
        self.ramp_active = self.occluded = False
        self.ramp_kpa = self.occlusion_kpa = self.occlusion_s = 0.0


def wire_value(value: float) -> str:
    """A reply number with a decimal point and up to 4 digits (``0.500``, ``300.0``, ``1000.``).

    Real NE pumps answer fixed-point numbers; nesp-lib's ``(\\d+\\.\\d*)`` needs the point.
    """
    value = max(value, 0.0)
    for decimals in (3, 2, 1, 0):
        text = f"{value:.{decimals}f}"
        if len(text.replace(".", "")) <= 4:
            return text if "." in text else text + "."
    return format_number(value)  # raises ProtocolError: more than 4 integer digits
