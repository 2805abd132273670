"""The controller's own bound on one injection: never more than programmed (issue 8, layer 2).

The pump stops itself at its programmed volume; this is what stops it when it does not (a pump
that ignores ``VOL``, a counter that under-reports and that the pump stops by). Pure: the
driver's monitor feeds it every poll and sends ``STP`` at once when it says so.

- **Over-delivery**: the delivered volume (``DIS``) above target + max(0.02 mL, 5 %).
- **Overtime**: the volume the pump was *commanded* to give in the time it has been infusing —
  the rate in force (adaptive flow included) integrated over the infusing time, time in HOLD
  excluded (a hold has its own ``max_hold_s``), the baseline window excluded too — above 1.5 ×
  the target. At a constant rate that is: infusing time > 1.5 × volume / rate + the baseline
  window. It needs nothing from the pump's counter, so it holds when the counter lies.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The delivered volume may exceed the target by max(these) before the controller stops it.
OVER_DELIVERY_MIN_ML = 0.02
OVER_DELIVERY_FRACTION = 0.05
#: The infusing time may exceed the time the volume needs by this factor (plus the baseline
#: window) before the controller stops it.
OVERTIME_FACTOR = 1.5

OVER_DELIVERY = "controller stop: over-delivery"
OVERTIME = "controller stop: overtime"


@dataclass
class DeliverySupervisor:
    """One injection's bound. ``rate_ml_min`` is the rate in force (updated under adaptive
    flow); ``grace_s`` the baseline window at the start, not counted."""

    target_ml: float
    rate_ml_min: float
    grace_s: float
    infusing_s: float = 0.0
    #: What the pump was commanded to give after the grace: the rate in force × infusing time.
    commanded_ml: float = 0.0
    #: The same over the whole infusing time: what the motor should have pushed.
    expected_ml: float = 0.0

    @property
    def tolerance_ml(self) -> float:
        return max(OVER_DELIVERY_MIN_ML, OVER_DELIVERY_FRACTION * self.target_ml)

    def infused_for(self, seconds: float) -> None:
        """``seconds`` spent infusing (not held) at the rate in force since the last call."""
        before = self.infusing_s
        self.infusing_s += seconds
        counted_s = max(0.0, self.infusing_s - self.grace_s) - max(0.0, before - self.grace_s)
        self.commanded_ml += self.rate_ml_min * counted_s / 60.0
        self.expected_ml += self.rate_ml_min * seconds / 60.0

    def over_delivered(self, delivered_ml: float) -> bool:
        return delivered_ml > self.target_ml + self.tolerance_ml

    @property
    def overtime(self) -> bool:
        return self.commanded_ml > OVERTIME_FACTOR * self.target_ml
