"""The controller's own bound on one injection (device_drivers.supervision; issue 8, layer 2)."""

from __future__ import annotations

import pytest

from device_drivers.supervision import DeliverySupervisor


def run(supervisor: DeliverySupervisor, seconds: float, step_s: float = 0.1) -> float:
    """Infuse in polls of ``step_s`` until the bound says overtime; the infusing time then."""
    while supervisor.infusing_s < seconds:
        supervisor.infused_for(step_s)
        if supervisor.overtime:
            return supervisor.infusing_s
    return float("inf")


def test_at_a_constant_rate_the_bound_is_one_and_a_half_times_the_time_plus_the_grace() -> None:
    # 0.5 mL at 0.3 mL/min needs 100 s: the bound is 150 s after the 2 s baseline window
    supervisor = DeliverySupervisor(0.5, 0.3, grace_s=2.0)
    assert run(supervisor, 400.0) == pytest.approx(152.0, abs=0.11)
    assert supervisor.expected_ml == pytest.approx(0.3 * 152.0 / 60, abs=0.001)


def test_adaptive_flow_stretches_the_bound_with_the_rate_in_force() -> None:
    supervisor = DeliverySupervisor(0.5, 0.3, grace_s=2.0)
    supervisor.infused_for(52.0)  # 0.25 mL commanded after the grace
    supervisor.rate_ml_min = 0.15  # the pump halved its rate
    # 0.75 − 0.25 = 0.5 mL more at 0.15 mL/min: 200 s more
    assert run(supervisor, 400.0) == pytest.approx(252.0, abs=0.11)


@pytest.mark.parametrize(
    ("target_ml", "delivered_ml", "over"),
    [(0.5, 0.525, False), (0.5, 0.526, True), (0.1, 0.12, False), (0.1, 0.121, True)],
)
def test_over_delivery_is_target_plus_the_larger_of_20_ul_and_5_percent(
    target_ml: float, delivered_ml: float, over: bool
) -> None:
    supervisor = DeliverySupervisor(target_ml, 0.3, grace_s=2.0)
    assert supervisor.over_delivered(delivered_ml) is over
